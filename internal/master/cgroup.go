package master

import (
	"fmt"
	"log/slog"

	"github.com/forkd/forkd/cgroup"
	"github.com/forkd/forkd/config"
)

// cgroups returns the cgroup v2 subtree systemd delegated to forkd, with
// forkd moved into its leaf (cgroup.Tree.Setup), or nil and why there is
// none. Workers and singletons each get a cgroup of their own in it.
func cgroups(log *slog.Logger) (*cgroup.Tree, error) {
	t, err := cgroup.Open()
	if err != nil {
		log.Debug("no cgroup delegation: workers share forkd's cgroup", "why", err)
		return nil, err
	}
	if err := t.Setup(); err != nil {
		log.Warn("cgroup delegation unusable: workers share forkd's cgroup", "err", err)
		return nil, err
	}
	log.Info("a cgroup per worker", "root", t.Root)
	return t, nil
}

// checkLimits refuses the limits of cfg that need a cgroup when there is
// no delegated subtree (t nil, why says why) or it lacks their
// controller: config errors at each key's place.
func checkLimits(cfg *config.Config, t *cgroup.Tree, why error) error {
	if !cfg.CgroupLimits() {
		return nil
	}
	if t == nil {
		return cfg.RefuseLimits(why)
	}
	ls := []config.Limits{cfg.Worker.Limits}
	for _, s := range cfg.Singletons {
		ls = append(ls, s.Limits)
	}
	for _, l := range ls {
		if keys := t.Missing(l.Cgroup()); len(keys) > 0 {
			return cfg.RefuseLimits(fmt.Errorf("%s lacks the controller %s needs (see its cgroup.controllers)", t.Root, keys[0]))
		}
	}
	return nil
}
