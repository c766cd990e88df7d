package catalog_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/callvault/callvault/pkg/catalog"
	"github.com/callvault/callvault/pkg/testenv"
)

// codecCases cover every field form: UUID and plain ids, negative and
// 64-bit numbers, long strings, messages with from/to.
func codecCases() []catalog.Stored {
	at := time.Date(2026, 11, 1, 9, 30, 12, 345_000_000, time.UTC)
	long := strings.Repeat("x", 300)
	return []catalog.Stored{
		{State: catalog.StateAdmitted, Pending: "P", ID: "0193f2c4-7b1a-7c3e-9a4b-000000000123", Kind: catalog.KindRecording, Mode: "automatic", At: at,
			Size: 3_100_000, User: "101", CallID: "abc@pbx.example", SHA256: strings.Repeat("ab", 32), ContentType: "audio/wav",
			ObjectKey: "recordings/a.example/2026/11/01/0193f2c4-7b1a-7c3e-9a4b-000000000123-a1b2c3d4e5f6", AcceptedAt: at.Add(-time.Hour), Seq: 1 << 40, Level: 7, DurationS: 185},
		{State: catalog.StateAdmitted, ID: "rec-1", Kind: catalog.KindRecording, Mode: "on_demand", At: at, Size: 0, CallID: long, SHA256: "not-hex",
			ObjectKey: "elsewhere/" + long, AcceptedAt: at.Add(40 * 24 * time.Hour), Seq: 3, ContentType: "audio/x-custom"},
		{State: catalog.StateRefused, Pending: "MP", ID: "vm-9", Kind: "voicemail", At: time.UnixMilli(0).UTC(), Size: 1 << 33, User: "7",
			ObjectKey: "messages/a.example/2026/vm-9.wav", AcceptedAt: at, Seq: 70000, From: "+15550100", To: "+15550199", ContentType: "audio/ogg"},
		{State: catalog.StateAdmitted, ID: "sms-2", Kind: "sms", At: at, ObjectKey: "\x01odd/a.example/sms-2", AcceptedAt: at, Seq: 9},
		{State: catalog.StateAdmitted, ID: "sms-3", Kind: "sms", At: at, ObjectKey: "sms/other.example/sms-3", AcceptedAt: at, Seq: 9},
		{State: catalog.StateAdmitted, ID: "sms-1", Kind: "sms", Folder: "inbox", At: at, Size: 140, User: "7", SHA256: strings.Repeat("0", 31) + "x",
			AcceptedAt: at.Add(-100 * 24 * time.Hour), Seq: 255, From: "a", To: "b"},
	}
}

var codecScript = catalog.RecLua + `
local t = up(ARGV[1])
if ARGV[2] == '1' then
  t[1], t[16], t[17], t[18], t[19], t[20] = 'dMT', 'cap_evicted', ARGV[3], 'a rule', 'policy', tonumber(ARGV[4])
end
return pk(t)
`

// TestLuaCodecMatchesGo runs records through the scripts' decoder and
// encoder, on the real Redis and on the in-process server make run uses,
// and checks they come back byte for byte, and that what a script adds
// reads back in Go.
func TestLuaCodecMatchesGo(t *testing.T) {
	t.Parallel()
	ns := testenv.Namespace(t)
	m := miniredis.RunT(t)
	servers := map[string]redis.UniversalClient{"redis": testenv.Redis(t, ns), "in-process": redis.NewClient(&redis.Options{Addr: m.Addr()})}
	for name, rdb := range servers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			script := redis.NewScript(codecScript)
			for _, s := range codecCases() {
				raw := s.Pack("a.example")
				got, err := script.Run(ctx, rdb, nil, raw, "0").Text()
				if err != nil {
					t.Fatal(err)
				}
				if got != raw {
					t.Fatalf("%s: the scripts re-encoded\n %q\nas\n %q", s.ID, raw, got)
				}
				back, err := catalog.UnpackStored("a.example", catalog.HourOf(s.At), got)
				if err != nil {
					t.Fatal(err)
				}
				if back.ID != s.ID || back.SHA256 != s.SHA256 || back.ObjectKey != s.ObjectKey || !back.At.Equal(s.At) ||
					!back.AcceptedAt.Equal(s.AcceptedAt) || back.Seq != s.Seq || back.Size != s.Size || back.CallID != s.CallID ||
					back.Folder != s.Folder || back.From != s.From || back.To != s.To || back.ContentType != s.ContentType || back.Level != s.Level {
					t.Fatalf("round trip of %s:\n got %+v\nwant %+v", s.ID, back, s)
				}
				del := time.Date(2027, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
				marked, err := script.Run(ctx, rdb, nil, raw, "1", catalog.EncodeID("0193f2c4-7b1a-7c3e-9a4b-000000000999"), del.UnixMilli()).Text()
				if err != nil {
					t.Fatal(err)
				}
				d, err := catalog.UnpackStored("a.example", catalog.HourOf(s.At), marked)
				if err != nil {
					t.Fatal(err)
				}
				if d.State != catalog.StateDeleted || d.Pending != "MT" || d.Reason != "cap_evicted" || d.Rule != "a rule" || d.Actor != "policy" ||
					d.EvictedID != "0193f2c4-7b1a-7c3e-9a4b-000000000999" || !d.DeletedAt.Equal(del) || d.ID != s.ID {
					t.Fatalf("deletion of %s read back as %+v", s.ID, d)
				}
				if again, err := script.Run(ctx, rdb, nil, marked, "0").Text(); err != nil || again != marked {
					t.Fatalf("%s: a marked record re-encoded differently: %v", s.ID, err)
				}
			}
		})
	}
}
