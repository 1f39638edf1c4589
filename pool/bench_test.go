package pool

import (
	"context"
	"testing"
	"time"
)

// benchPool is a pool with instances of one key already warm, so the
// benchmarks measure the hot path only: idle pop, lease, push back.
func benchPool(b *testing.B, warm int) (*Pool[*fakeInst], Spec[*fakeInst]) {
	p := New[*fakeInst](Config{CapacityMB: 1 << 20})
	l := newLauncher()
	spec := Spec[*fakeInst]{Key: "k", App: "app", Fn: "fn", MemoryMB: 128, IdleTimeout: time.Hour, Launch: l.fn("k", 128)}
	leases := make([]*Lease[*fakeInst], warm)
	for i := range leases {
		lease, err := p.Acquire(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		leases[i] = lease
	}
	for _, lease := range leases {
		lease.Release()
	}
	b.Cleanup(func() {
		if err := p.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return p, spec
}

func BenchmarkAcquireRelease(b *testing.B) {
	p, spec := benchPool(b, 1)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := p.Acquire(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		l.Release()
	}
}

func BenchmarkAcquireReleaseParallel(b *testing.B) {
	// One warm instance per goroutine, so nobody waits for a launch.
	p, spec := benchPool(b, 64)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, err := p.Acquire(ctx, spec)
			if err != nil {
				b.Fatal(err)
			}
			l.Release()
		}
	})
}
