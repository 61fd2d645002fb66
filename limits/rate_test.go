package limits

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
	}{
		{"1000/s", Rate{1000, time.Second}},
		{"1000/sec", Rate{1000, time.Second}},
		{"1000/second", Rate{1000, time.Second}},
		{"50000/min", Rate{50000, time.Minute}},
		{"50000/m", Rate{50000, time.Minute}},
		{"50000/minute", Rate{50000, time.Minute}},
		{"10/100ms", Rate{10, 100 * time.Millisecond}},
		{"300/5s", Rate{300, 5 * time.Second}},
		{"120/1m", Rate{120, time.Minute}},
		{"1/60s", Rate{1, time.Minute}},
		{"7/1.5s", Rate{7, 1500 * time.Millisecond}},
		{"4294967295/s", Rate{MaxCount, time.Second}},
	}
	for i, tt := range tests {
		got, err := ParseRate(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("step %d: ParseRate(%q) = %v, %v; want %v, nil", i, tt.in, got, err, tt.want)
		}
		back, err := ParseRate(got.String())
		if err != nil || back != got {
			t.Errorf("step %d: ParseRate(%q.String()=%q) = %v, %v; want round trip", i, tt.in, got.String(), back, err)
		}
	}
}

func TestParseRateErrors(t *testing.T) {
	tests := []struct {
		in       string
		mentions string // the error must name this
	}{
		{"", `""`},
		{"1000", "missing '/'"},
		{"/s", `count ""`},
		{"abc/s", `count "abc"`},
		{"-5/s", `count "-5"`},
		{"+5/s", `count "+5"`},
		{"0/s", "count 0 is out of range"},
		{"4294967296/s", "count 4294967296"},
		{"99999999999999999999/s", "count"},
		{"10/h", `window "h"`},
		{"10/ms", `window "ms"`},
		{"10/50ms", "window 50ms is out of range"},
		{"10/61s", "window 1m1s is out of range"},
		{"10/150ms", "not a multiple of 100ms"},
		{"10/-1s", "out of range"},
		{"10/", `window ""`},
		{"10/1s/2", `window "1s/2"`},
		{" 10/s", "white space at offset 0"},
		{"5 / s", `write it without ("5/s")`},
		{"10/S", `write "s"`},
		{"10/SEC", `write "sec"`},
		{"10/5S", `write "5s"`},
	}
	for i, tt := range tests {
		got, err := ParseRate(tt.in)
		if err == nil {
			t.Errorf("step %d: ParseRate(%q) = %v, nil; want an error", i, tt.in, got)
			continue
		}
		if !errors.Is(err, ErrInvalidRate) {
			t.Errorf("step %d: ParseRate(%q) error %v does not wrap ErrInvalidRate", i, tt.in, err)
		}
		if msg := err.Error(); !strings.Contains(msg, tt.mentions) || !strings.Contains(msg, "e.g. 1000/s") {
			t.Errorf("step %d: ParseRate(%q) error %q; want it to mention %q and the allowed forms", i, tt.in, msg, tt.mentions)
		}
	}
}

func TestRateValues(t *testing.T) {
	r := MustParseRate("50000/min")
	if got, want := r.Slots(), 600; got != want {
		t.Errorf("Slots() = %d, want %d", got, want)
	}
	if got, want := r.PerSecond(), 50000.0/60; got != want {
		t.Errorf("PerSecond() = %v, want %v", got, want)
	}
	if got, want := MustParseRate("10/100ms").Slots(), 1; got != want {
		t.Errorf("Slots() = %d, want %d", got, want)
	}
	var back Rate
	text, _ := r.MarshalText()
	if err := back.UnmarshalText(text); err != nil || back != r {
		t.Errorf("text round trip of %v = %v, %v", r, back, err)
	}
	if err := back.UnmarshalText([]byte("nope")); !errors.Is(err, ErrInvalidRate) {
		t.Errorf("UnmarshalText(nope) = %v, want ErrInvalidRate", err)
	}
	if err := (Rate{}).Validate(); !errors.Is(err, ErrInvalidRate) {
		t.Errorf("zero Rate Validate() = %v, want ErrInvalidRate", err)
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"1000/s", "50000/min", "10/100ms", "300/5s", "1/1m30s", "0/s", "x", "/", "9/9h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRate) {
				t.Fatalf("ParseRate(%q) error %v does not wrap ErrInvalidRate", s, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("ParseRate(%q) = %v which does not validate: %v", s, r, err)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRate(%q) = %v; String %q reparses to %v, %v", s, r, r.String(), back, err)
		}
	})
}
