package master

import (
	"encoding/json"

	"github.com/forkd/forkd/workers"
)

// handedOver returns the pids of the processes an in-place upgrade handed
// over: the workers, the singletons and the schedules' runs in flight; nil
// when the jobs' part cannot be read, and the reaper then treats every
// child it finds at start as handed over.
func handedOver(h *workers.Handover) []int {
	pids := []int{}
	for _, w := range h.Workers {
		pids = append(pids, w.PID)
	}
	if len(h.Jobs) == 0 {
		return pids
	}
	// The pids of the supervisor's handover (jobs/supervisor/handover.go).
	var jobs struct {
		Singletons []struct {
			PID int `json:"pid"`
		} `json:"singletons"`
		Schedules []struct {
			Run *struct {
				PID int `json:"pid"`
			} `json:"run"`
		} `json:"schedules"`
		ClusterAgent *struct {
			PID int `json:"pid"`
		} `json:"cluster_agent"`
	}
	if err := json.Unmarshal(h.Jobs, &jobs); err != nil {
		return nil
	}
	if jobs.ClusterAgent != nil {
		pids = append(pids, jobs.ClusterAgent.PID)
	}
	for _, s := range jobs.Singletons {
		pids = append(pids, s.PID)
	}
	for _, s := range jobs.Schedules {
		if s.Run != nil {
			pids = append(pids, s.Run.PID)
		}
	}
	return pids
}
