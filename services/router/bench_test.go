package router_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	routerv1 "github.com/callvault/callvault/proto/callvault/router/v1"
)

// benchRecordings is how many 1 MB recordings each run moves.
const benchRecordings = 150

// BenchmarkOffload measures the router moving 1 MB recordings from the
// CDS (local disk) to an S3 bucket and to an SFTP server, beside direct
// loops on the same servers in the same run: a serial PutObject loop (and
// one with the router's per-target concurrency, 4 writers), and a plain
// pkg/sftp write loop (serial, and 4 writers). The router's time runs from
// its start over a backlog of admitted recordings until the last archive
// record is written: read, upload, verify and record included. Run with
// -benchtime=1x.
func BenchmarkOffload(b *testing.B) {
	for range b.N {
		for _, kind := range []string{"s3", "sftp"} {
			b.Run(kind, func(b *testing.B) { benchOffload(b, kind) })
		}
	}
}

func benchOffload(b *testing.B, kind string) {
	set := fastSettings(b)
	// The production defaults of concurrency.
	set.Workers, set.PerTarget = 16, 4
	rg := newRig(b, set)
	body := randomBytes(1 << 20)
	var cfg *routerv1.ArchiveConfig
	var sec *routerv1.ArchiveSecret
	var bucket, dir string
	if kind == "s3" {
		bucket = benchBucket(b, rg)
		cfg, sec = s3Config(b, "bench", "system", "", "s3", bucket)
	} else {
		cfg, sec, dir = sftpConfig(b, "bench", "system", "")
	}
	if _, _, err := rg.svc.CreateConfig(context.Background(), system, cfg, sec); err != nil {
		b.Fatal(err)
	}
	rg.stop()
	for i := range benchRecordings {
		r := recording{id: "rec-" + strconv.Itoa(i), domain: "a.example", reseller: "r1", body: body}
		rg.admit(r)
	}
	cpu0 := cpuNow()
	start := time.Now()
	rg.start()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		st, err := rg.svc.Status(context.Background(), system, cfgID(b, rg))
		if err != nil {
			b.Fatal(err)
		}
		if st.GetArchived() == benchRecordings {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d archived", st.GetArchived(), benchRecordings)
		}
		time.Sleep(5 * time.Millisecond)
	}
	routerSecs := time.Since(start).Seconds()
	rg.stop() // closes its connections: the server's processes for them end
	time.Sleep(300 * time.Millisecond)
	routerCPU := cpuNow().since(cpu0)

	var serial, four float64
	cpu1 := cpuNow()
	if kind == "s3" {
		serial = putLoop(b, rg, body, 1)
	} else {
		serial = sftpLoop(b, dir, body, 1)
	}
	time.Sleep(300 * time.Millisecond)
	loopCPU := cpuNow().since(cpu1)
	if kind == "s3" {
		four = putLoop(b, rg, body, 4)
	} else {
		four = sftpLoop(b, dir, body, 4)
	}
	mb := float64(benchRecordings) // 1 MB each
	routerMBs := mb / routerSecs
	b.ReportMetric(routerMBs, "router-MB/s")
	b.ReportMetric(float64(benchRecordings)/routerSecs, "router-rec/s")
	b.ReportMetric(mb/serial, "loop-MB/s")
	b.ReportMetric(mb/four, "loop4-MB/s")
	b.ReportMetric(routerMBs/(mb/serial), "router/loop")
	b.ReportMetric(routerMBs/(mb/four), "router/loop4")
	if kind == "sftp" {
		fmt.Fprintf(os.Stderr, "offload sftp CPU per MB: router %.2f ms here + %.2f ms in sshd; serial loop %.2f ms here + %.2f ms in sshd (2 cores)\n",
			1000*routerCPU.self/mb, 1000*routerCPU.sshd/mb, 1000*loopCPU.self/mb, 1000*loopCPU.sshd/mb)
	}
	fmt.Fprintf(os.Stderr, "offload %s: router %.1f MB/s (%.1f recordings/s) | serial loop %.1f MB/s -> ratio %.2f | 4-writer loop %.1f MB/s -> ratio %.2f (goal 0.7)\n",
		kind, routerMBs, float64(benchRecordings)/routerSecs, mb/serial, routerMBs/(mb/serial), mb/four, routerMBs/(mb/four))
}

func cfgID(b *testing.B, rg *rig) string {
	l, err := rg.svc.ListConfigs(context.Background(), system, "", "")
	if err != nil || len(l) != 1 {
		b.Fatalf("configs = %v, %v", l, err)
	}
	return l[0].GetId()
}

func benchBucket(b *testing.B, rg *rig) string {
	name := bucketName(b)
	if _, err := rg.s3.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		b.Fatal(err)
	}
	return name
}

// putLoop writes benchRecordings 1 MB objects with PutObject from n
// writers to a fresh bucket and returns the seconds taken.
func putLoop(b *testing.B, rg *rig, body []byte, n int) float64 {
	bucket := benchBucket(b, rg)
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := rg.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String("loop/" + strconv.Itoa(i)),
					Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body)))}); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := range benchRecordings {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(start).Seconds()
}

// sftpLoop writes benchRecordings 1 MB files with plain pkg/sftp (one
// connection, concurrent writes on) from n writers and returns the
// seconds taken.
func sftpLoop(b *testing.B, dir string, body []byte, n int) float64 {
	key, err := os.ReadFile(os.Getenv("CALLVAULT_TEST_SFTP_KEY"))
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	conn, err := ssh.Dial("tcp", os.Getenv("CALLVAULT_TEST_SFTP_ADDR"), &ssh.ClientConfig{
		User: os.Getenv("CALLVAULT_TEST_SFTP_USER"), Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), //nolint:gosec // the loopback test server, as a baseline only
	})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c, err := sftp.NewClient(conn, sftp.UseConcurrentWrites(true))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	sub := dir + "/loop-" + strconv.Itoa(n)
	if err := c.MkdirAll(sub); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f, err := c.Create(sub + "/" + strconv.Itoa(i))
				if err != nil {
					b.Error(err)
					continue
				}
				if _, err := f.ReadFrom(bytes.NewReader(body)); err != nil {
					b.Error(err)
				}
				_ = f.Close()
			}
		}()
	}
	for i := range benchRecordings {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(start).Seconds()
}

// cpu is CPU seconds used so far: this process, and the test sshd's
// connection processes that have ended (the master collects them).
type cpu struct{ self, sshd float64 }

func (c cpu) since(o cpu) cpu { return cpu{c.self - o.self, c.sshd - o.sshd} }

func cpuNow() cpu {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	self := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	return cpu{self: self, sshd: sshdChildrenCPU()}
}

// sshdChildrenCPU reads the test sshd master's collected children's CPU
// (cutime + cstime) from /proc; 0 where it cannot.
func sshdChildrenCPU() float64 {
	pidFile := filepath.Join(filepath.Dir(os.Getenv("CALLVAULT_TEST_SFTP_KEY")), "sshd.pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(raw)) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name in parentheses; cutime and cstime are
	// fields 16 and 17 of the whole line.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 15 {
		return 0
	}
	cu, _ := strconv.ParseFloat(f[13], 64)
	cs, _ := strconv.ParseFloat(f[14], 64)
	return (cu + cs) / 100 // clock ticks of 1/100 s
}
