package cds_test

import (
	"bytes"
	"testing"

	"github.com/callvault/callvault/pkg/testenv"
)

// TestS3ContentType checks that S3 keeps the content type given to Put.
func TestS3ContentType(t *testing.T) {
	t.Parallel()
	s := testenv.S3(t, testenv.Namespace(t))
	cases := []struct{ name, contentType string }{
		{"ogg", "audio/ogg"},
		{"wav", "audio/wav"},
		{"multipart", "audio/mpeg"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			size := 100
			if c.name == "multipart" {
				size = partSize + 1
			}
			key := "ct/" + c.name
			if _, err := s.Put(ctxT(t), key, bytes.NewReader(randomBytes(t, size)), c.contentType); err != nil {
				t.Fatal(err)
			}
			obj, err := s.Stat(ctxT(t), key)
			if err != nil {
				t.Fatal(err)
			}
			if obj.ContentType != c.contentType || obj.Size != int64(size) {
				t.Fatalf("Stat = %+v, want content type %q size %d", obj, c.contentType, size)
			}
		})
	}
}
