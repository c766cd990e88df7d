package router_test

// The tests of this file document properties that were attacked and held
// at the time of writing; they pass.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/platform"
	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// Holds: over gRPC (the real auth interceptors), another tenant's token
// (reseller r2, a.example's name under r2, a user token, b.example's
// admin) neither reads, changes, deletes, tests nor plays a.example's
// configuration and archive.
func TestGRPCTenancyHolds(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	ctx := context.Background()
	bucket := rg.bucket(false)
	c, s := s3Config(t, "A", "domain", "a.example", "s3", bucket)
	A := rg.create(aDomain, c, s)
	rg.admit(recording{id: "rec-1", domain: "a.example", reseller: "r1", user: "101", body: randomBytes(3000)})
	rg.waitState("a.example", "rec-1", "archived")

	user := auth.Principal{Name: "u102", Level: auth.LevelUser, Reseller: "r1", Domain: "a.example", User: "102"}
	g, _ := platform.NewGRPCServer(tokenTable{"a": aDomain, "r2": r2, "grab": grab, "b": bDomain, "u": user}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	rg.svc.RegisterGRPC(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	cl := routerv1.NewArchiveServiceClient(conn)
	as := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	// The owner reads and plays.
	if _, err := cl.GetConfig(as("a"), &routerv1.GetConfigRequest{Id: A.GetId()}); err != nil {
		t.Fatalf("owner get: %v", err)
	}
	denied := func(err error) bool {
		c := status.Code(err)
		return c == codes.NotFound || c == codes.PermissionDenied
	}
	for _, tok := range []string{"r2", "grab", "b", "u"} {
		if _, err := cl.GetConfig(as(tok), &routerv1.GetConfigRequest{Id: A.GetId()}); !denied(err) {
			t.Errorf("%s get = %v", tok, err)
		}
		up := &routerv1.ArchiveConfig{Id: A.GetId(), Name: "taken", Level: "domain", Match: "a.example", StorageType: "s3", SendRecordings: true,
			Bucket: bucket, Endpoint: c.GetEndpoint(), AccessKeyId: c.GetAccessKeyId()}
		if _, err := cl.UpdateConfig(as(tok), &routerv1.UpdateConfigRequest{Config: up}); !denied(err) {
			t.Errorf("%s update = %v", tok, err)
		}
		if _, err := cl.DeleteConfig(as(tok), &routerv1.DeleteConfigRequest{Id: A.GetId()}); !denied(err) {
			t.Errorf("%s delete = %v", tok, err)
		}
		if _, err := cl.TestConfig(as(tok), &routerv1.TestConfigRequest{Id: A.GetId()}); !denied(err) {
			t.Errorf("%s test = %v", tok, err)
		}
		if _, err := cl.GetStatus(as(tok), &routerv1.GetStatusRequest{Id: A.GetId()}); !denied(err) {
			t.Errorf("%s status = %v", tok, err)
		}
		if tok != "u" { // a user token of a.example may ask about its own recordings
			if _, err := cl.GetArchiveStates(as(tok), &routerv1.GetArchiveStatesRequest{Domain: "a.example", ArtifactIds: []string{"rec-1"}}); !denied(err) {
				t.Errorf("%s archive states = %v", tok, err)
			}
		}
		st, err := cl.OpenArchived(as(tok), &routerv1.OpenArchivedRequest{Domain: "a.example", ArtifactId: "rec-1"})
		if err == nil {
			_, err = st.Recv()
		}
		if !denied(err) {
			t.Errorf("%s playback = %v", tok, err)
		}
		l, err := cl.ListConfigs(as(tok), &routerv1.ListConfigsRequest{})
		for _, x := range l.GetConfigs() {
			if x.GetId() == A.GetId() {
				t.Errorf("%s lists A", tok)
			}
		}
		_ = err
	}
	if got, _ := rg.svc.GetConfig(ctx, system, A.GetId()); got.GetName() != "A" {
		t.Errorf("A was changed to %q", got.GetName())
	}
}

// Holds: call ids, users and ids built to climb out of the prefix stay
// inside the configuration's directory on the SFTP server.
func TestPathValuesStayUnderThePrefix(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	sc, ss, dir := sftpConfig(t, "F", "domain", "a.example")
	sc.PathTemplate = "{user}/{call_id}/{recording_id}.{ext}"
	rg.create(aDomain, sc, ss)
	ctx := context.Background()
	for i, v := range []struct{ user, call string }{
		{"..", "../../../../escape"}, {".", "%2e%2e/%2e%2e/escape"}, {"../..", "..\\..\\escape"}, {"", "/abs/escape"},
	} {
		id := fmt.Sprintf("rec-%d", i)
		r := recording{id: id, domain: "a.example", reseller: "r1", user: v.user, body: randomBytes(100)}
		key := "recordings/a.example/" + id
		if _, err := rg.d.CDS.Put(ctx, key, strings.NewReader(string(r.body)), "audio/wav"); err != nil {
			t.Fatal(err)
		}
		rg.publishAdmittedCall(r, key, v.call)
		rg.waitState("a.example", id, "archived")
	}
	root := filepath.Dir(dir)
	inside := 0
	_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !strings.Contains(info.Name(), "escape") {
			return nil
		}
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Errorf("%s is outside the configuration's directory", p)
		} else {
			inside++
		}
		return nil
	})
	if inside != 4 {
		t.Errorf("found %d escaped call-id segments inside the directory, want 4", inside)
	}
}

// Holds: FTP in disguise is refused with the compliance message.
func TestFTPDisguisesAreRefused(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	for _, tc := range []struct{ typ, endpoint string }{
		{"FTP", ""}, {" ftp ", ""}, {"ftps", ""}, {"Ftps", ""}, {"s3", "ftp://user:pw@files.example"}, {"wasabi", "FTP://files.example"}, {"sftp", "ftp://files.example"},
	} {
		c := &routerv1.ArchiveConfig{Name: "f", Level: "domain", Match: "a.example", StorageType: tc.typ, SendRecordings: true,
			Host: "files.example", Username: "u", Endpoint: tc.endpoint}
		_, _, err := rg.svc.CreateConfig(context.Background(), aDomain, c, &routerv1.ArchiveSecret{Value: &routerv1.ArchiveSecret_Password{Password: "pw"}})
		var v *apierr.ValidationError
		if !errors.As(err, &v) || !strings.Contains(err.Error(), "FTP does not meet compliance") {
			t.Errorf("%q %q = %v, want the FTP refusal", tc.typ, tc.endpoint, err)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("the refusal echoes the URL's credentials: %v", err)
		}
	}
}

// Holds: two router instances consuming the same decisions, each decision
// published twice under different ids, archive every recording once, with
// one record each and true counts.
func TestTwoInstancesArchiveEachOnce(t *testing.T) {
	t.Parallel()
	rg := newRig(t, fastSettings(t))
	bucket := rg.bucket(false)
	D := rg.createPair(aDomain)(s3Config(t, "D", "domain", "a.example", "s3", bucket))
	rg.secondService(true)
	const n = 20
	for i := range n {
		r := recording{id: fmt.Sprintf("rec-%d", i), domain: "a.example", reseller: "r1", body: randomBytes(20_000 + i)}
		rg.admit(r)
		rg.publishAdmitted(r, "recordings/a.example/"+r.id, "again-"+r.id)
	}
	for i := range n {
		rg.waitState("a.example", fmt.Sprintf("rec-%d", i), "archived")
	}
	time.Sleep(time.Second)
	if got := len(rg.objects(bucket)); got != n {
		t.Errorf("bucket holds %d objects, want %d", got, n)
	}
	for id, c := range rg.archivedEvents() {
		if c != 1 {
			t.Errorf("%s has %d archive records", id, c)
		}
	}
	if st := rg.status(D.GetId()); st.GetArchived() != n || st.GetWaiting() != 0 || st.GetState() != "active" {
		t.Errorf("D = %+v, want %d archived, none waiting, active", st, n)
	}
}
