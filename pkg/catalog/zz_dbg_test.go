package catalog_test

import (
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/catalog"
)

func TestZZDbg(t *testing.T) {
	c, rdb, ns := brkCatalog(t)
	brkProvision(t, c, "d0.example")
	r := rec("d0.example", "x1", "alice", "call-1", base, 10)
	a := c.RecordingArtifact(r)
	if err := c.ApplyRecorded(ctxT(t), []catalog.Recorded{{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: a}}}); err != nil {
		t.Fatal(err)
	}
	for k, v := range dumpNS(t, rdb, ns) {
		t.Logf("%s = %.80q", k, v)
	}
	s := catalog.Message{ID: "sms-0", Reseller: "r1", Domain: "d0.example", User: "7", Kind: "sms", Folder: "inbox", ReceivedAt: base, Size: 3, AcceptedAt: base}
	if err := c.ApplyRecorded(ctxT(t), []catalog.Recorded{{Op: catalog.OpAdmission, Admission: catalog.Admission{Artifact: c.MessageArtifact(s)}}}); err != nil {
		t.Fatal(err)
	}
	t.Log(rdb.ZRangeWithScores(ctxT(t), c.FolderKey("d0.example", "7", "inbox"), 0, -1).Result())
	t.Log(rdb.Get(ctxT(t), c.MonthKey("d0.example", "recording_automatic", r.AcceptedAt)).Result())
	_ = time.Now
}
