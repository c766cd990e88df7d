package router_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/testenv"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// TestBestMatchAtEachLevel is the domain brief's worked example on real
// targets: S (system, S3), R1 (reseller r1, a second bucket standing in
// for Wasabi), D1 (a.example, SFTP), D2 (b.example, disabled).
func TestBestMatchAtEachLevel(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	sBucket, rBucket, d2Bucket := rg.bucket(false), rg.bucket(false), rg.bucket(false)
	S := rg.createPair(system)(s3Config(t, "S", "system", "", "s3", sBucket))
	wc, ws := s3Config(t, "R1", "reseller", "r1", "wasabi", rBucket)
	R1, warn, err := rg.svc.CreateConfig(context.Background(), r1, wc, ws)
	if err != nil {
		t.Fatal(err)
	}
	if len(warn) != 1 || !strings.Contains(warn[0], "90 days") {
		t.Errorf("a Wasabi configuration's warnings = %q, want the 90-day minimum", warn)
	}
	dc, ds, dir := sftpConfig(t, "D1", "domain", "a.example")
	D1 := rg.create(aDomain, dc, ds)
	d2c, d2s := s3Config(t, "D2", "domain", "b.example", "s3", d2Bucket)
	d2c.Enabled = false
	D2 := rg.create(bDomain, d2c, d2s)

	recs := map[string]recording{
		"rec-a": {id: "rec-a", domain: "a.example", reseller: "r1", user: "101", body: randomBytes(300_000)},
		"rec-b": {id: "rec-b", domain: "b.example", reseller: "r1", user: "102", body: randomBytes(200_000)},
		"rec-c": {id: "rec-c", domain: "c.example", reseller: "r2", user: "103", body: randomBytes(100_000)},
	}
	for _, r := range recs {
		rg.admit(r)
	}
	want := map[string]string{"rec-a": D1.GetId(), "rec-b": R1.GetId(), "rec-c": S.GetId()}
	for id, cfg := range want {
		st := rg.waitState(recs[id].domain, id, "archived")
		if st.GetConfigId() != cfg {
			t.Errorf("%s archived to %s (%s), want %s", id, st.GetConfigId(), st.GetConfigName(), cfg)
		}
		if st.GetSha256() != sha(recs[id].body) || st.GetSizeBytes() != int64(len(recs[id].body)) {
			t.Errorf("%s recorded %s / %d bytes, want the recording's", id, st.GetSha256(), st.GetSizeBytes())
		}
	}
	// Each target holds exactly its recording, byte for byte.
	for bucket, id := range map[string]string{sBucket: "rec-c", rBucket: "rec-b"} {
		keys := rg.objects(bucket)
		if len(keys) != 1 || !strings.HasSuffix(keys[0], id+".wav") {
			t.Fatalf("bucket for %s holds %v", id, keys)
		}
		if got := rg.getObject(bucket, keys[0]); !bytes.Equal(got, recs[id].body) {
			t.Errorf("%s: the archived bytes differ", id)
		}
	}
	if keys := rg.objects(d2Bucket); len(keys) != 0 {
		t.Errorf("the disabled D2 received %v", keys)
	}
	var sftpFiles []string
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			sftpFiles = append(sftpFiles, p)
		}
		return nil
	})
	if len(sftpFiles) != 1 || !strings.HasSuffix(sftpFiles[0], "a.example/2026/11/02/call-rec-a/rec-a.wav") {
		t.Fatalf("the SFTP target holds %v", sftpFiles)
	}
	if got, _ := os.ReadFile(sftpFiles[0]); !bytes.Equal(got, recs["rec-a"].body) {
		t.Error("rec-a: the bytes on the SFTP server differ")
	}
	for _, id := range []string{S.GetId(), R1.GetId(), D1.GetId()} {
		st := rg.status(id)
		if st.GetState() != "active" || st.GetArchived() != 1 || st.GetLastSuccessAt() == nil {
			t.Errorf("status of %s = %+v, want active with one archived", id, st)
		}
	}
	if st := rg.status(D2.GetId()); st.GetState() != "disabled" {
		t.Errorf("status of D2 = %+v, want disabled", st)
	}

	// With no S, a c.example recording is recorded as not archived, with why.
	if err := rg.svc.DeleteConfig(context.Background(), system, S.GetId()); err != nil {
		t.Fatal(err)
	}
	rg.admit(recording{id: "rec-c2", domain: "c.example", reseller: "r2", body: randomBytes(1000)})
	st := rg.waitState("c.example", "rec-c2", "not_archived")
	if !strings.Contains(st.GetReason(), "no enabled configuration") || !strings.Contains(st.GetReason(), "c.example") {
		t.Errorf("not-archived reason = %q", st.GetReason())
	}
	if keys := rg.objects(sBucket); len(keys) != 1 {
		t.Errorf("the deleted S received more: %v", keys)
	}
}

// TestFailingDomainConfigKeepsItsWork: while D1's bucket refuses writes
// (it does not exist), a.example's recordings wait for D1, D1 is tagged
// error with how many wait, and R1 and S (which would work) receive
// nothing. Once the bucket exists the backlog drains by itself, every
// recording archived exactly once.
func TestFailingDomainConfigKeepsItsWork(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	sBucket, rBucket, dBucket := rg.bucket(false), rg.bucket(false), bucketName(t)
	rg.createPair(system)(s3Config(t, "S", "system", "", "s3", sBucket))
	rg.createPair(r1)(s3Config(t, "R1", "reseller", "r1", "s3", rBucket))
	D1 := rg.createPair(aDomain)(s3Config(t, "D1", "domain", "a.example", "s3", dBucket))

	const n = 6
	var ids []string
	for i := range n {
		r := recording{id: "rec-" + string(rune('a'+i)), domain: "a.example", reseller: "r1", body: randomBytes(50_000 + i)}
		ids = append(ids, r.id)
		rg.admit(r)
	}
	testenv.WaitFor(t, "D1 in error with every recording waiting", func() bool {
		st := rg.status(D1.GetId())
		return st.GetState() == "error" && st.GetWaiting() == n
	})
	st := rg.status(D1.GetId())
	if !strings.Contains(st.GetLastError(), "bucket") || st.GetLastErrorAt() == nil {
		t.Errorf("D1's last error = %q at %v, want the missing bucket named", st.GetLastError(), st.GetLastErrorAt())
	}
	for _, id := range ids {
		if s := rg.state("a.example", id); s.GetState() != "pending" || s.GetConfigId() != D1.GetId() {
			t.Errorf("%s state = %+v, want pending on D1", id, s)
		}
	}
	// Let it fail long enough to park (ParkAfter deliveries) and retry.
	testenv.WaitFor(t, "the work parked off the stream", func() bool {
		n, _ := rg.d.Redis.ZCard(context.Background(), rg.d.Names.Namespace()+":{_archive}:parked").Result()
		return n == int64(len(ids))
	})
	if k := rg.objects(sBucket); len(k) != 0 {
		t.Errorf("S received %v while D1 failed (no failover)", k)
	}
	if k := rg.objects(rBucket); len(k) != 0 {
		t.Errorf("R1 received %v while D1 failed (no failover)", k)
	}

	rg.createBucket(dBucket, false)
	for _, id := range ids {
		rg.waitState("a.example", id, "archived")
	}
	if k := rg.objects(dBucket); len(k) != n {
		t.Errorf("D1's bucket holds %d objects, want %d: %v", len(k), n, k)
	}
	testenv.WaitFor(t, "D1 active with nothing waiting", func() bool {
		st := rg.status(D1.GetId())
		return st.GetState() == "active" && st.GetWaiting() == 0 && st.GetArchived() == n
	})
	for id, c := range rg.archivedEvents() {
		if c != 1 {
			t.Errorf("%s has %d archive records, want 1", id, c)
		}
	}
	if len(rg.objects(sBucket))+len(rg.objects(rBucket)) != 0 {
		t.Error("S or R1 received a copy after the recovery")
	}
}

// TestWrongHostKeyIsRefused: an SFTP server offering another host key than
// the one pinned is never written to; TestConfig says why.
func TestWrongHostKeyIsRefused(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	c, s, dir := sftpConfig(t, "D1", "domain", "a.example")
	c.HostKeyFingerprint = testenv.Env(t, "CALLVAULT_TEST_SFTP_OTHER_HOSTKEY")
	D1 := rg.create(aDomain, c, s)
	res, err := rg.svc.TestConfig(context.Background(), aDomain, D1.GetId())
	if err != nil {
		t.Fatal(err)
	}
	if res.GetOk() || res.GetReason() != "host_key_mismatch" {
		t.Fatalf("TestConfig = %+v, want host_key_mismatch", res)
	}
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", body: randomBytes(1000)})
	testenv.WaitFor(t, "D1 in error", func() bool { return rg.status(D1.GetId()).GetState() == "error" })
	if e := rg.status(D1.GetId()).GetLastError(); !strings.Contains(e, "host key") {
		t.Errorf("last error %q does not name the host key", e)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("the server with the wrong key received %v", entries)
	}
	// The right key works, and the waiting recording goes.
	c.Id, c.HostKeyFingerprint = D1.GetId(), testenv.Env(t, "CALLVAULT_TEST_SFTP_HOSTKEY")
	if _, _, err := rg.svc.UpdateConfig(context.Background(), aDomain, c, nil); err != nil {
		t.Fatal(err)
	}
	if res, _ := rg.svc.TestConfig(context.Background(), aDomain, D1.GetId()); !res.GetOk() {
		t.Fatalf("TestConfig with the right key = %+v", res)
	}
	rg.waitState("a.example", "rec-1", "archived")
}

// TestConfigurationsAreValidated: FTP is refused with the compliance
// reason, and every bad field is named.
func TestConfigurationsAreValidated(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	field := func(err error) []string {
		var v *apierr.ValidationError
		if !errors.As(err, &v) {
			t.Fatalf("error %v is not a validation error", err)
		}
		var out []string
		for _, f := range v.Violations {
			out = append(out, f.Field)
		}
		return out
	}
	ftp := &routerv1.ArchiveConfig{Name: "old", Level: "domain", Match: "a.example", Enabled: true, StorageType: "ftp", SendRecordings: true, Host: "ftp.a.example"}
	_, _, err := rg.svc.CreateConfig(context.Background(), aDomain, ftp, &routerv1.ArchiveSecret{Value: &routerv1.ArchiveSecret_Password{Password: "x"}})
	if err == nil || !strings.Contains(err.Error(), "does not meet compliance") || !strings.Contains(err.Error(), "SFTP") {
		t.Fatalf("FTP = %v, want a refusal saying it does not meet compliance and to use SFTP", err)
	}
	if !slices.Contains(field(err), "config.storage_type") {
		t.Errorf("FTP refusal names %v, want config.storage_type", field(err))
	}
	for name, tc := range map[string]struct {
		mut  func(*routerv1.ArchiveConfig)
		want string
	}{
		"climbing template":   {func(c *routerv1.ArchiveConfig) { c.PathTemplate = "{domain}/../{recording_id}" }, "config.path_template"},
		"absolute template":   {func(c *routerv1.ArchiveConfig) { c.PathTemplate = "/{recording_id}" }, "config.path_template"},
		"unknown field":       {func(c *routerv1.ArchiveConfig) { c.PathTemplate = "{password}/{recording_id}" }, "config.path_template"},
		"no level":            {func(c *routerv1.ArchiveConfig) { c.Level = "" }, "config.level"},
		"system with a match": {func(c *routerv1.ArchiveConfig) { c.Level, c.Match = "system", "a.example" }, "config.match"},
		"nothing to send":     {func(c *routerv1.ArchiveConfig) { c.SendRecordings = false }, "config.send_recordings"},
		"bad bucket":          {func(c *routerv1.ArchiveConfig) { c.Bucket = "No_Such" }, "config.bucket"},
		"endpoint with creds": {func(c *routerv1.ArchiveConfig) { c.Endpoint = "https://u:p@s3.example" }, "config.endpoint"},
		"bad age key":         {func(c *routerv1.ArchiveConfig) { c.AgeRecipient = "age1nope" }, "config.age_recipient"},
		"climbing prefix":     {func(c *routerv1.ArchiveConfig) { c.Prefix = "a/../../b" }, "config.prefix"},
	} {
		c, s := s3Config(t, "D", "domain", "a.example", "s3", bucket)
		tc.mut(c)
		_, _, err := rg.svc.CreateConfig(context.Background(), aDomain, c, s)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !slices.Contains(field(err), tc.want) {
			t.Errorf("%s: names %v, want %s", name, field(err), tc.want)
		}
	}
	sc, ss, _ := sftpConfig(t, "D", "domain", "a.example")
	sc.HostKeyFingerprint = ""
	if _, _, err := rg.svc.CreateConfig(context.Background(), aDomain, sc, ss); err == nil || !slices.Contains(field(err), "config.host_key_fingerprint") {
		t.Errorf("SFTP without a host key = %v, want config.host_key_fingerprint named", err)
	}
	// Two enabled configurations on one level and match are refused.
	first := rg.createPair(aDomain)(s3Config(t, "one", "domain", "a.example", "s3", bucket))
	_, _, err = rg.tryCreate(aDomain)(s3Config(t, "two", "domain", "a.example", "s3", bucket))
	if !errors.Is(err, apierr.ErrConflict) || !strings.Contains(err.Error(), first.GetId()) {
		t.Fatalf("a second enabled a.example configuration = %v, want a conflict naming %s", err, first.GetId())
	}
	// A disabled second one is fine, but enabling it is refused too.
	c, s := s3Config(t, "two", "domain", "a.example", "s3", bucket)
	c.Enabled = false
	second := rg.create(aDomain, c, s)
	second.Enabled = true
	if _, _, err := rg.svc.UpdateConfig(context.Background(), aDomain, second, nil); !errors.Is(err, apierr.ErrConflict) {
		t.Fatalf("enabling a second a.example configuration = %v, want a conflict", err)
	}
}

// TestConfigurationsAreTenantScoped tries every call with every other
// tenant's token.
func TestConfigurationsAreTenantScoped(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	ctx := context.Background()
	S := rg.createPair(system)(s3Config(t, "S", "system", "", "s3", bucket))
	R1 := rg.createPair(r1)(s3Config(t, "R1", "reseller", "r1", "s3", bucket))
	DA := rg.createPair(aDomain)(s3Config(t, "DA", "domain", "a.example", "s3", bucket))
	DB := rg.createPair(r1)(s3Config(t, "DB", "domain", "b.example", "s3", bucket))
	DC := rg.createPair(cDomain)(s3Config(t, "DC", "domain", "c.example", "s3", bucket))

	sees := map[string][]string{ // principal -> the configurations it sees
		system.Name:  {S.GetId(), R1.GetId(), DA.GetId(), DB.GetId(), DC.GetId()},
		r1.Name:      {R1.GetId(), DA.GetId(), DB.GetId()},
		r2.Name:      {DC.GetId()},
		aDomain.Name: {DA.GetId()},
		bDomain.Name: {DB.GetId()},
		cDomain.Name: {DC.GetId()},
		grab.Name:    {},
	}
	all := []string{S.GetId(), R1.GetId(), DA.GetId(), DB.GetId(), DC.GetId()}
	for _, p := range []auth.Principal{system, r1, r2, aDomain, bDomain, cDomain, grab} {
		list, err := rg.svc.ListConfigs(ctx, p, "", "")
		if err != nil {
			t.Fatalf("%s list: %v", p.Name, err)
		}
		var got []string
		for _, c := range list {
			got = append(got, c.GetId())
		}
		slices.Sort(got)
		want := append([]string(nil), sees[p.Name]...)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %v, want %v", p.Name, got, want)
		}
		for _, id := range all {
			visible := slices.Contains(sees[p.Name], id)
			_, gerr := rg.svc.GetConfig(ctx, p, id)
			_, serr := rg.svc.Status(ctx, p, id)
			_, terr := rg.svc.TestConfig(ctx, p, id)
			for what, err := range map[string]error{"get": gerr, "status": serr, "test": terr} {
				if visible && err != nil {
					t.Errorf("%s %s %s: %v", p.Name, what, id, err)
				}
				if !visible && !errors.Is(err, apierr.ErrNotFound) {
					t.Errorf("%s %s of a configuration it does not see = %v, want not found", p.Name, what, err)
				}
			}
			if !visible {
				c, _ := rg.svc.GetConfig(ctx, system, id)
				c.Name = "taken"
				if _, _, err := rg.svc.UpdateConfig(ctx, p, c, nil); !errors.Is(err, apierr.ErrNotFound) {
					t.Errorf("%s update of %s = %v, want not found", p.Name, id, err)
				}
				if err := rg.svc.DeleteConfig(ctx, p, id); !errors.Is(err, apierr.ErrNotFound) {
					t.Errorf("%s delete of %s = %v, want not found", p.Name, id, err)
				}
			}
		}
	}
	// Creating outside one's scope is refused.
	for _, tc := range []struct {
		p            string
		level, match string
	}{
		{"r1", "system", ""}, {"a", "system", ""}, {"a", "reseller", "r1"}, {"r2", "reseller", "r1"},
		{"r2", "domain", "a.example"}, {"a", "domain", "b.example"}, {"grab", "domain", "a.example"},
	} {
		p := map[string]auth.Principal{"r1": r1, "r2": r2, "a": aDomain, "grab": grab}[tc.p]
		c, s := s3Config(t, "x", tc.level, tc.match, "s3", bucket)
		c.Enabled = false
		if _, _, err := rg.svc.CreateConfig(ctx, p, c, s); !errors.Is(err, apierr.ErrForbidden) {
			t.Errorf("%s creating %s %s = %v, want forbidden", tc.p, tc.level, tc.match, err)
		}
	}
	// An update cannot move a configuration into another tenant.
	DA.Match = "c.example"
	if _, _, err := rg.svc.UpdateConfig(ctx, aDomain, DA, nil); !errors.Is(err, apierr.ErrForbidden) {
		t.Errorf("moving DA to c.example = %v, want forbidden", err)
	}
	// Archive states and playback of another tenant's domain are refused.
	for _, p := range []auth.Principal{r2, bDomain, cDomain, grab} {
		if _, err := rg.svc.ArchiveStates(ctx, p, "a.example", []string{"rec-1"}); !errors.Is(err, apierr.ErrForbidden) {
			t.Errorf("%s archive states of a.example = %v, want forbidden", p.Name, err)
		}
		if _, err := rg.svc.OpenArchived(ctx, p, "a.example", "rec-1", 0, -1); !errors.Is(err, apierr.ErrForbidden) {
			t.Errorf("%s playback from a.example = %v, want forbidden", p.Name, err)
		}
	}
}

// TestPlaybackFromTheArchive: with the central copy gone, the recording
// is read from its archive (whole and by range).
func TestPlaybackFromTheArchive(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	for _, kind := range []string{"s3", "sftp"} {
		t.Run(kind, func(t *testing.T) {
			id := "rec-play-" + kind
			domain := map[string]string{"s3": "a.example", "sftp": "b.example"}[kind]
			var c *routerv1.ArchiveConfig
			var s *routerv1.ArchiveSecret
			if kind == "s3" {
				c, s = s3Config(t, "D", "domain", domain, "s3_glacier_ir", rg.bucket(false))
			} else {
				c, s, _ = sftpConfig(t, "D", "domain", domain)
			}
			rg.create(system, c, s)
			body := randomBytes(700_000)
			rg.admit(recording{id: id, domain: domain, reseller: "r1", body: body})
			rg.waitState(domain, id, "archived")
			if err := rg.d.CDS.Delete(context.Background(), "recordings/"+domain+"/"+id); err != nil {
				t.Fatal(err)
			}
			a, err := rg.svc.OpenArchive(context.Background(), r1, domain, id, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(a.Body)
			a.Body.Close()
			if !bytes.Equal(got, body) || a.Size != int64(len(body)) {
				t.Fatalf("played %d bytes (size %d), want the %d archived", len(got), a.Size, len(body))
			}
			a, err = rg.svc.OpenArchive(context.Background(), r1, domain, id, 1000, 500)
			if err != nil {
				t.Fatal(err)
			}
			got, _ = io.ReadAll(a.Body)
			a.Body.Close()
			if !bytes.Equal(got, body[1000:1500]) {
				t.Fatalf("range read %d bytes, not bytes 1000-1499", len(got))
			}
		})
	}
}
