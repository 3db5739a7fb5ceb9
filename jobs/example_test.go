package jobs_test

import (
	"fmt"
	"time"

	"github.com/forkd/forkd/jobs"
)

func ExampleParseCron() {
	seoul, err := time.LoadLocation("Asia/Seoul")
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := jobs.ParseCron("30 3 * * MON-FRI", seoul)
	if err != nil {
		fmt.Println(err)
		return
	}
	t := time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC) // a Friday
	for range 3 {
		t = c.Next(t)
		fmt.Println(t.Format(time.RFC3339))
	}
	_, err = jobs.ParseCron("*/5 * * *", seoul)
	fmt.Println(err)
	// Output:
	// 2025-08-04T03:30:00+09:00
	// 2025-08-05T03:30:00+09:00
	// 2025-08-06T03:30:00+09:00
	// invalid cron expression "*/5 * * *": expected exactly 5 fields, found 4: [*/5 * * *]
}

func ExampleEvery() {
	start := time.Date(2025, 8, 1, 12, 0, 10, 0, time.UTC) // when the schedule started
	e := jobs.Every{Period: 5 * time.Minute, Anchor: start}
	due := e.Next(start)
	fmt.Println("first run:", due.Format(time.TimeOnly))
	// The run took 7 minutes; the next due time is still on the grid.
	ended := due.Add(7 * time.Minute)
	fmt.Println("after it:", e.Next(ended).Format(time.TimeOnly))
	// Output:
	// first run: 12:05:10
	// after it: 12:15:10
}

func ExampleDecide() {
	fmt.Println(jobs.Decide(jobs.OverlapSkip, false, false))
	fmt.Println(jobs.Decide(jobs.OverlapSkip, true, false))
	fmt.Println(jobs.Decide(jobs.OverlapQueue, true, false))
	fmt.Println(jobs.Decide(jobs.OverlapQueue, true, true))
	fmt.Println(jobs.Decide(jobs.OverlapReplace, true, false))
	// Output:
	// start
	// skip
	// queue
	// skip
	// replace
}

func ExampleMissed() {
	daily, err := jobs.ParseCron("0 3 * * *", time.UTC)
	if err != nil {
		fmt.Println(err)
		return
	}
	last := time.Date(2025, 8, 1, 3, 0, 0, 0, time.UTC) // from the State
	now := time.Date(2025, 8, 4, 9, 0, 0, 0, time.UTC)  // forkd starts again
	if due, ok := jobs.Missed(daily, last, now); ok {
		run := jobs.Run{Schedule: "backup", ID: "(from IDs.New)", ScheduledAt: due}
		fmt.Println(run.Env())
	}
	// Output:
	// [FORKD_SCHEDULE=backup FORKD_RUN_ID=(from IDs.New) FORKD_SCHEDULED_AT=2025-08-04T03:00:00Z]
}
