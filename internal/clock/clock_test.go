package clock

import (
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCoarseAdvancesAndNeverGoesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCoarse(time.Millisecond)
		defer c.Close()
		first := c.Now()
		prev := first
		for i := range 50 {
			time.Sleep(time.Millisecond)
			synctest.Wait()
			now := c.Now()
			if now < prev {
				t.Fatalf("step %d: Now() = %d went back from %d", i, now, prev)
			}
			prev = now
		}
		if got, want := time.Duration(prev-first), 50*time.Millisecond; got != want {
			t.Errorf("after 50 sleeps of 1ms the clock moved %v, want %v", got, want)
		}
		if lag := c.Precise() - c.Now(); lag < 0 || lag > int64(c.Resolution()) {
			t.Errorf("Precise()-Now() = %v, want within [0, %v]", time.Duration(lag), c.Resolution())
		}
	})
}

func TestCoarseResolutionFloor(t *testing.T) {
	c := NewCoarse(time.Nanosecond)
	defer c.Close()
	if got, want := c.Resolution(), 100*time.Microsecond; got != want {
		t.Errorf("Resolution() = %v, want %v", got, want)
	}
	d := NewCoarse(0)
	defer d.Close()
	if got := d.Resolution(); got != DefaultResolution {
		t.Errorf("Resolution() = %v, want %v", got, DefaultResolution)
	}
}

func TestCoarseCloseIsIdempotent(t *testing.T) {
	c := NewCoarse(0)
	c.Close()
	c.Close()
	if c.Now() == 0 {
		t.Error("Now() after Close = 0, want the last reading")
	}
}

func TestSharedIsReferenceCounted(t *testing.T) {
	a := Acquire()
	b := Acquire()
	if a.Coarse != b.Coarse {
		t.Fatal("two handles got different clocks")
	}
	a.Release()
	a.Release() // a second release of the same handle must not drop b's reference
	if shared.refs != 1 {
		t.Fatalf("refs = %d after releasing one of two handles, want 1", shared.refs)
	}
	b.Release()
	if shared.refs != 0 || shared.clock != nil {
		t.Fatalf("refs = %d, clock = %v after the last release, want 0, nil", shared.refs, shared.clock)
	}
	c := Acquire() // restarts cleanly
	defer c.Release()
	if c.Now() == 0 {
		t.Error("restarted shared clock reads 0")
	}
}

func TestSkewedAndManual(t *testing.T) {
	m := NewManual(1000)
	s := NewSkewed(m)
	steps := []struct {
		advance time.Duration
		offset  time.Duration
		want    int64
	}{
		{0, 0, 1000},
		{10, 0, 1010},
		{0, 500 * time.Millisecond, 1010 + int64(500*time.Millisecond)},
		{5, -500 * time.Millisecond, 1015 - int64(500*time.Millisecond)},
	}
	for i, st := range steps {
		m.Advance(st.advance)
		s.SetOffset(st.offset)
		if got := s.Now(); got != st.want {
			t.Errorf("step %d: Now() = %d, want %d", i, got, st.want)
		}
		if got := s.Offset(); got != st.offset {
			t.Errorf("step %d: Offset() = %v, want %v", i, got, st.offset)
		}
	}
	m.Set(5)
	if got := m.Now(); got != 5 {
		t.Errorf("after Set(5) Now() = %d", got)
	}
}

func BenchmarkCoarseNow(b *testing.B) {
	c := NewCoarse(0)
	defer c.Close()
	b.RunParallel(func(pb *testing.PB) {
		var sum int64
		for pb.Next() {
			sum += c.Now()
		}
		_ = sum
	})
}

func BenchmarkTimeNow(b *testing.B) {
	b.RunParallel(func(pb *testing.PB) {
		var sum int64
		for pb.Next() {
			sum += time.Now().UnixNano()
		}
		_ = sum
	})
}

func TestCoarseGoesIdleAndWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := NewCoarse(time.Millisecond)
		defer c.Close()
		// Read once every 20 ms (a sync loop's ticks): idle within a
		// window of refreshes.
		for range 10 {
			time.Sleep(20 * time.Millisecond)
			c.Now()
		}
		synctest.Wait()
		if !c.Idle() {
			t.Fatal("after 200 ms read every 20 ms: Idle() = false, want true")
		}
		// Idle, a reading is exact and never goes back.
		prev := c.Now()
		time.Sleep(7 * time.Millisecond)
		if got, want := c.Now(), prev+int64(7*time.Millisecond); got != want {
			t.Errorf("idle: Now() = %d, want %d (exact)", got, want)
		}
		// Read every 100 µs: refreshing again within an idle period or two.
		for range 2000 {
			time.Sleep(100 * time.Microsecond)
			if now := c.Now(); now < prev {
				t.Fatalf("Now() = %d went back from %d", now, prev)
			} else {
				prev = now
			}
		}
		synctest.Wait()
		if c.Idle() {
			t.Fatal("after 200 ms read every 100 µs: Idle() = true, want false")
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if lag := c.Precise() - c.Now(); lag < 0 || lag > int64(c.Resolution()) {
			t.Errorf("Precise()-Now() = %v, want within [0, %v]", time.Duration(lag), c.Resolution())
		}
	})
}
