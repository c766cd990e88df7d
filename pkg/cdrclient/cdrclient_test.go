package cdrclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/callvault/callvault/pkg/apierr"
	"github.com/callvault/callvault/pkg/auth"
	"github.com/callvault/callvault/pkg/cdrclient"
	cdrv1 "github.com/callvault/callvault/proto/callvault/cdr/v1"
)

const token = "tenant-token-0123456789"

// fakeLedger serves CdrService from a few fixed answers and records the
// authorization each call carried.
type fakeLedger struct {
	cdrv1.UnimplementedCdrServiceServer
	mu        sync.Mutex
	auths     []string
	cancelled chan struct{}
}

func (f *fakeLedger) seen(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auths = append(f.auths, md.Get("authorization")...)
}

func (f *fakeLedger) authorizations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.auths)
}

// refusal answers the domains and ids that stand for errors.
func refusal(name string) error {
	switch name {
	case "other.example", "gone":
		return apierr.GRPC(fmt.Errorf("%w: %s", apierr.ErrNotFound, name))
	case "BAD":
		return apierr.GRPC(apierr.Invalid("domain", "must be a lower-case DNS name such as a.example"))
	case "down.example":
		return status.Error(codes.Unavailable, "connection refused")
	}
	return nil
}

func (f *fakeLedger) ExportCdrs(req *cdrv1.ExportCdrsRequest, stream grpc.ServerStreamingServer[cdrv1.ExportCdrsResponse]) error {
	f.seen(stream.Context())
	if err := refusal(req.GetQuery().GetDomain()); err != nil {
		return err
	}
	for i, n := range []int{2, 0, 3, 1} {
		res := &cdrv1.ExportCdrsResponse{}
		for j := range n {
			res.Cdrs = append(res.Cdrs, &cdrv1.Cdr{Id: fmt.Sprintf("cdr-%d-%d", i, j), Domain: req.GetQuery().GetDomain()})
		}
		if err := stream.Send(res); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeLedger) CreateExport(ctx context.Context, req *cdrv1.CreateExportRequest) (*cdrv1.CreateExportResponse, error) {
	f.seen(ctx)
	if err := refusal(req.GetQuery().GetDomain()); err != nil {
		return nil, err
	}
	return &cdrv1.CreateExportResponse{Export: &cdrv1.Export{Id: "exp-1", Query: req.GetQuery(), Format: req.GetFormat(), State: cdrv1.ExportState_EXPORT_STATE_QUEUED}}, nil
}

func (f *fakeLedger) GetExport(ctx context.Context, req *cdrv1.GetExportRequest) (*cdrv1.GetExportResponse, error) {
	f.seen(ctx)
	if err := refusal(req.GetId()); err != nil {
		return nil, err
	}
	st := cdrv1.ExportState_EXPORT_STATE_DONE
	if req.GetId() == "running" {
		st = cdrv1.ExportState_EXPORT_STATE_RUNNING
	}
	return &cdrv1.GetExportResponse{Export: &cdrv1.Export{Id: req.GetId(), State: st, Format: cdrv1.ExportFormat_EXPORT_FORMAT_CSV, SizeBytes: 11}}, nil
}

func (f *fakeLedger) OpenExport(req *cdrv1.OpenExportRequest, stream grpc.ServerStreamingServer[cdrv1.OpenExportResponse]) error {
	f.seen(stream.Context())
	for _, c := range []string{"hello", "", " world"} {
		if err := stream.Send(&cdrv1.OpenExportResponse{Chunk: []byte(c)}); err != nil {
			return err
		}
	}
	switch req.GetId() {
	case "broken":
		return status.Error(codes.Internal, "segment unreadable")
	case "endless":
		// Holds the stream open until the client goes away.
		<-stream.Context().Done()
		close(f.cancelled)
		return stream.Context().Err()
	}
	return nil
}

// start serves a fake ledger on an in-memory listener and returns a
// client connected to it.
func start(t *testing.T) (*cdrclient.Client, *fakeLedger) {
	t.Helper()
	f := &fakeLedger{cancelled: make(chan struct{})}
	l := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	cdrv1.RegisterCdrServiceServer(g, f)
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///ledger",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return cdrclient.New(conn), f
}

type staticAuth struct{}

func (staticAuth) Authenticate(_ context.Context, tok string) (auth.Principal, error) {
	if tok != token {
		return auth.Principal{}, apierr.ErrUnauthenticated
	}
	return auth.Principal{Name: "t", Level: auth.LevelDomain, Reseller: "r1", Domain: "a.example"}, nil
}

// asCaller runs fn with the context a REST request authenticated with
// token has, the context the gateway calls the ledger with.
func asCaller(t *testing.T, fn func(ctx context.Context, p auth.Principal)) {
	t.Helper()
	ran := false
	h := auth.HTTP(staticAuth{}, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		ran = true
		p, _ := auth.FromContext(r.Context())
		ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		fn(ctx, p)
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if !ran {
		t.Fatal("the caller was not authenticated")
	}
}

func TestForwardsTheCallersToken(t *testing.T) {
	t.Parallel()
	c, f := start(t)
	asCaller(t, func(ctx context.Context, p auth.Principal) {
		q := &cdrv1.Query{Domain: "a.example"}
		if err := c.Export(ctx, p, q, func([]*cdrv1.Cdr) error { return nil }); err != nil {
			t.Error(err)
		}
		if _, err := c.CreateExport(ctx, p, q, cdrv1.ExportFormat_EXPORT_FORMAT_CSV); err != nil {
			t.Error(err)
		}
		rc, _, err := c.OpenExport(ctx, p, "exp-1")
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	})
	got := f.authorizations()
	// Export, CreateExport, and OpenExport's GetExport and OpenExport.
	if len(got) != 4 {
		t.Fatalf("the ledger saw %d authorizations, want 4: %q", len(got), got)
	}
	for _, a := range got {
		if a != "Bearer "+token {
			t.Errorf("authorization %q, want the caller's token", a)
		}
	}
}

func TestExportHandsOverEachBatch(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	asCaller(t, func(ctx context.Context, p auth.Principal) {
		var sizes []int
		err := c.Export(ctx, p, &cdrv1.Query{Domain: "a.example"}, func(b []*cdrv1.Cdr) error {
			sizes = append(sizes, len(b))
			return nil
		})
		if err != nil || !slices.Equal(sizes, []int{2, 3, 1}) {
			t.Errorf("batches %v, %v; want [2 3 1] (no empty batch)", sizes, err)
		}
		stop := errors.New("client went away")
		calls := 0
		err = c.Export(ctx, p, &cdrv1.Query{Domain: "a.example"}, func([]*cdrv1.Cdr) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("after fn failed: %d calls, %v; want 1 and fn's error", calls, err)
		}
	})
}

func TestMapsLedgerErrors(t *testing.T) {
	t.Parallel()
	c, _ := start(t)
	for _, tc := range []struct {
		domain string
		want   error
		field  string
	}{
		{"other.example", apierr.ErrNotFound, ""},
		{"BAD", nil, "domain"},
		{"down.example", apierr.ErrUnavailable, ""},
	} {
		t.Run(tc.domain, func(t *testing.T) {
			t.Parallel()
			asCaller(t, func(ctx context.Context, p auth.Principal) {
				q := &cdrv1.Query{Domain: tc.domain}
				exportErr := c.Export(ctx, p, q, func([]*cdrv1.Cdr) error {
					t.Error("a refused export delivered rows")
					return nil
				})
				_, createErr := c.CreateExport(ctx, p, q, cdrv1.ExportFormat_EXPORT_FORMAT_JSON)
				for _, err := range []error{exportErr, createErr} {
					if tc.field != "" {
						var ve *apierr.ValidationError
						if !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != tc.field {
							t.Errorf("got %v, want a validation error naming %s", err, tc.field)
						}
						continue
					}
					if !errors.Is(err, tc.want) {
						t.Errorf("got %v, want %v", err, tc.want)
					}
				}
			})
		})
	}
}

func TestOpenExport(t *testing.T) {
	t.Parallel()
	c, f := start(t)
	for _, tc := range []struct {
		id   string
		want error
	}{
		{"running", apierr.ErrConflict},
		{"gone", apierr.ErrNotFound},
	} {
		asCaller(t, func(ctx context.Context, p auth.Principal) {
			if _, _, err := c.OpenExport(ctx, p, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("OpenExport(%s) = %v, want %v", tc.id, err, tc.want)
			}
		})
	}
	asCaller(t, func(ctx context.Context, p auth.Principal) {
		rc, ex, err := c.OpenExport(ctx, p, "exp-1")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		body, err := io.ReadAll(rc)
		if err != nil || string(body) != "hello world" || ex.GetSizeBytes() != 11 {
			t.Errorf("body %q, %v, export %v", body, err, ex)
		}
	})
	asCaller(t, func(ctx context.Context, p auth.Principal) {
		rc, _, err := c.OpenExport(ctx, p, "broken")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		body, err := io.ReadAll(rc)
		if !errors.Is(err, apierr.ErrUnavailable) || string(body) != "hello world" {
			t.Errorf("a stream broken after its chunks read %q, %v; want them and an unavailable error", body, err)
		}
	})
	asCaller(t, func(ctx context.Context, p auth.Principal) {
		rc, _, err := c.OpenExport(ctx, p, "endless")
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		select {
		case <-f.cancelled:
		case <-ctx.Done():
			t.Error("Close did not cancel the stream")
		}
	})
}
