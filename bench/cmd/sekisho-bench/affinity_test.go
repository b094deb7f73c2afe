package main

import (
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
