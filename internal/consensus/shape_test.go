package consensus

import (
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheckShapeAcceptsValidMsgpack(t *testing.T) {
	values := []any{
		nil, true, false, 0, 1, 127, 128, -1, -32, -33, 255, 256, 65535, 65536, int64(1) << 40, -(int64(1) << 40),
		uint64(1) << 63, float32(1.5), 2.25, "", "a", strings.Repeat("s", 31), strings.Repeat("s", 32),
		strings.Repeat("s", 300), strings.Repeat("s", 70000), []byte{}, []byte("bin"), make([]byte, 300), make([]byte, 70000),
		[]int{}, []int{1, 2, 3}, make([]int, 20), make([]string, 70000), map[string]int{"a": 1},
		map[string]any{"n": []any{1, "x", map[string]int{"k": 2}}}, time.Unix(1, 2), time.Unix(1<<40, 5),
		snapshot{V: 1, Rules: []wireRule{{Pattern: "k", Count: 1, Window: time.Second}}, Recent: []recent{{ID: 1}}},
	}
	for _, v := range values {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkShape(b); err != nil {
			t.Errorf("%T %.40v: %v", v, v, err)
		}
		if len(b) > 1 {
			if err := checkShape(b[:len(b)-1]); err == nil {
				t.Errorf("%T %.40v truncated by one byte: accepted", v, v)
			}
		}
	}
}

func TestCheckShapeRefusesHeadersLargerThanTheInput(t *testing.T) {
	for name, b := range map[string][]byte{
		"array32 of 2^32-1": {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01},
		"map32 of 2^31":     {0xdf, 0x80, 0, 0, 0, 0x01, 0x01},
		"array16 of 300":    {0xdc, 0x01, 0x2c, 0x01},
		"str32 of 1 GiB":    {0xdb, 0x40, 0, 0, 0, 'a'},
		"bin32 of 1 GiB":    {0xc6, 0x40, 0, 0, 0, 'a'},
		"ext32 of 1 GiB":    {0xc9, 0x40, 0, 0, 0, 1, 'a'},
		"nested":            {0x91, 0xdd, 0x00, 0x10, 0x00, 0x00},
		"never used 0xc1":   {0xc1},
		"empty":             {},
	} {
		if err := checkShape(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, _, err := decodeSnapshot(b); err == nil {
			t.Errorf("%s: decodeSnapshot accepted it", name)
		}
	}
}
