package router_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/callvault/callvault/pkg/testenv"
	"github.com/callvault/callvault/services/router"
)

// admitWithoutArtifactID stores media and publishes a decision that names
// no artifact id: the router archives it under its event id.
func (rg *rig) admitWithoutArtifactID(eventID string, body []byte) {
	rg.t.Helper()
	key := "recordings/a.example/" + eventID
	if _, err := rg.d.CDS.Put(context.Background(), key, bytes.NewReader(body), "audio/wav"); err != nil {
		rg.t.Fatal(err)
	}
	rg.publishAdmitted(recording{id: "", domain: "a.example", reseller: "r1", body: body}, key, eventID)
}

func (rg *rig) waitAllAcked() {
	rg.t.Helper()
	ctx := context.Background()
	testenv.WaitFor(rg.t, "the decisions acknowledged on the stream", func() bool {
		c, err := rg.d.JS.Consumer(ctx, rg.d.Names.IngestStream(), router.ArchiveConsumer)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
}

// TestParkedDecisionsWithoutArtifactIDAreKeptApart: a decision without an
// artifact id is archived under its event id (archiveOne falls back to
// env.Id), but handle parks it under the empty artifact id, so every such
// decision of a domain is parked as the same job "a.example/": the second
// overwrites the first, whose work is gone once its message is acked.
// After the target recovers only one of the two is archived.
func TestParkedDecisionsWithoutArtifactIDAreKeptApart(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := bucketName(t) // missing until the target "recovers"
	rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	rg.admitWithoutArtifactID("evt-a", randomBytes(2000))
	rg.admitWithoutArtifactID("evt-b", randomBytes(2000))
	rg.waitAllAcked()
	parked, _ := rg.d.Redis.ZRange(context.Background(), rg.d.Names.Namespace()+":{_archive}:parked", 0, -1).Result()
	t.Logf("parked jobs: %q", parked)

	rg.createBucket(bucket, false) // the target recovers
	for _, id := range []string{"evt-a", "evt-b"} {
		if st, ok := rg.stateWithin("a.example", id, "archived", 8*time.Second); !ok {
			t.Errorf("%s after the target's recovery = %s (%q), want archived; bucket holds %v",
				id, st.GetState(), st.GetReason(), rg.objects(bucket))
		}
	}
}

// TestParkedDecisionWithoutArtifactIDSurvivesLosingRedis: the restore
// after a Redis loss re-parks only decisions that carry an artifact id, so
// a parked one archived under its event id is never tried again.
func TestParkedDecisionWithoutArtifactIDSurvivesLosingRedis(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := bucketName(t)
	rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	rg.admitWithoutArtifactID("evt-noid", randomBytes(2000))
	rg.waitAllAcked()

	rg.stop()
	rg.loseRouterState()
	rg.start()
	rg.createBucket(bucket, false)
	if st, ok := rg.stateWithin("a.example", "evt-noid", "archived", 10*time.Second); !ok {
		t.Errorf("evt-noid (parked when Redis lost its state) after the restore and the target's recovery = %s (%q), want archived; bucket holds %v",
			st.GetState(), st.GetReason(), rg.objects(bucket))
	}
}
