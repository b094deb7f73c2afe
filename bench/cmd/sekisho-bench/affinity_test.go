package main

import (
	"errors"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCPUList(t *testing.T) {
	for _, tc := range []struct {
		cpus []int
		want string
	}{
		{nil, ""},
		{[]int{0}, "0"},
		{[]int{1}, "1"},
		{[]int{1, 2, 3}, "1-3"},
		{[]int{0, 2}, "0,2"},
		{[]int{0, 1, 3, 5, 6, 7, 63, 64}, "0-1,3,5-7,63-64"},
		{[]int{cpuBits - 1}, "1023"},
	} {
		var set unix.CPUSet
		for _, c := range tc.cpus {
			set.Set(c)
		}
		if got := cpuList(&set); got != tc.want {
			t.Errorf("cpuList(%v) = %q, want %q", tc.cpus, got, tc.want)
		}
	}
}

// With one CPU to use there is nothing to split and the pinned run is
// skipped; with more, sekisho gets the first and the others the rest.
func TestPlanPinning(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)
	e := &env{}
	if all.Count() >= 2 {
		p, err := e.planPinning()
		if err != nil {
			t.Fatal(err)
		}
		if p.sekisho.Count() != 1 || p.others.Count() != all.Count()-1 {
			t.Errorf("sekisho on %s, the others on %s, from %s", cpuList(&p.sekisho), cpuList(&p.others), cpuList(&all))
		}
		for cpu := range cpuBits {
			if all.IsSet(cpu) && p.sekisho.IsSet(cpu) == p.others.IsSet(cpu) {
				t.Errorf("CPU %d: sekisho's %v, the others' %v", cpu, p.sekisho.IsSet(cpu), p.others.IsSet(cpu))
			}
		}
	}
	var one unix.CPUSet
	for cpu := range cpuBits {
		if all.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	if _, err := e.planPinning(); !errors.Is(err, errOneCPU) {
		t.Errorf("on one CPU: %v, want errOneCPU", err)
	}
}
