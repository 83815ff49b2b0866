// Command tlog-interop checks a `ledger serve` log with Go's golang.org/x/mod/sumdb/note and
// sumdb/tlog, an implementation independent of the ledger: it verifies the served checkpoint
// with the log's verifier key, reads the Merkle tree through tlog.TileHashReader (which
// checks every tile it loads against the checkpoint's root) from the C2SP tlog-tiles paths,
// recomputes the root, proves and checks the inclusion of leaves taken from the entry
// bundles, and, given an older size, proves and checks consistency with it.
//
// Usage: tlog-interop BASE_URL VERIFIER_KEY_FILE [OLD_SIZE [OLD_ROOT_HEX]]
// (OLD_ROOT_HEX: the root of an earlier checkpoint of OLD_SIZE, which the tree must match)
// Build (Debian's golang-go and golang-golang-x-mod-dev, no module proxy):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o tlog-interop main.go
package main

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var base string

func get(path string) []byte {
	resp, err := http.Get(base + path)
	if err != nil {
		fail("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		fail("GET %s: status %d %v", path, resp.StatusCode, err)
	}
	return body
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlog-interop: FAIL "+format+"\n", args...)
	os.Exit(1)
}

// tiles fetches Go's tiles from the C2SP paths: Go names them tile/8/L/N[.p/W] (with the
// height), C2SP tile/L/N[.p/W] (height 8 implied).
type tiles struct{ fetched int }

func (t *tiles) Height() int { return 8 }

func (t *tiles) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(ts))
	for i, tile := range ts {
		path := "/" + strings.Replace(tile.Path(), "tile/8/", "tile/", 1)
		data := get(path)
		if len(data) != tile.W*tlog.HashSize {
			fail("%s: %d bytes, want %d", path, len(data), tile.W*tlog.HashSize)
		}
		out[i] = data
		t.fetched++
	}
	return out, nil
}

func (t *tiles) SaveTiles([]tlog.Tile, [][]byte) {}

// entry returns leaf i's entry from its (possibly partial) bundle in a tree of n leaves.
func entry(i, n int64) []byte {
	tile := i / 256
	width := n - tile*256
	path := "/tile/entries/" + strings.TrimPrefix(tlog.Tile{H: 8, L: 0, N: tile, W: 256}.Path(), "tile/8/0/")
	if width < 256 {
		path += ".p/" + strconv.FormatInt(width, 10)
	}
	bundle := get(path)
	for k := int64(0); len(bundle) >= 2; k++ {
		size := int(binary.BigEndian.Uint16(bundle))
		if len(bundle) < 2+size {
			fail("%s: truncated", path)
		}
		if k == i%256 {
			return bundle[2 : 2+size]
		}
		bundle = bundle[2+size:]
	}
	fail("%s: no entry %d", path, i%256)
	return nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: tlog-interop BASE_URL VERIFIER_KEY_FILE [OLD_SIZE]")
		os.Exit(2)
	}
	base = strings.TrimRight(os.Args[1], "/")
	key, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail("%v", err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(key)))
	if err != nil {
		fail("verifier key: %v", err)
	}
	msg := get("/checkpoint")
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint: %v", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != verifier.Name() {
		fail("checkpoint text %q (origin must be %q)", n.Text, verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("size %q", lines[1])
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		fail("root %q", lines[2])
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	reader := &tiles{}
	hashes := tlog.TileHashReader(tree, reader)

	got, err := tlog.TreeHash(size, hashes)
	if err != nil || got != root {
		fail("tree hash from tiles: %v %v, checkpoint %v", got, err, root)
	}
	checked := 0
	for _, i := range []int64{0, size / 3, size / 2, size - 1} {
		if i < 0 || i >= size {
			continue
		}
		proof, err := tlog.ProveRecord(size, i, hashes)
		if err != nil {
			fail("prove leaf %d: %v", i, err)
		}
		if err := tlog.CheckRecord(proof, size, root, i, tlog.RecordHash(entry(i, size))); err != nil {
			fail("leaf %d: %v", i, err)
		}
		checked++
	}
	fmt.Printf("ok: checkpoint %s size %d verified; root recomputed from %d tiles; %d inclusion proofs checked\n",
		lines[0], size, reader.fetched, checked)
	if len(os.Args) > 3 {
		old, err := strconv.ParseInt(os.Args[3], 10, 64)
		if err != nil || old < 1 || old > size {
			fail("OLD_SIZE %q", os.Args[3])
		}
		oldRoot, err := tlog.TreeHash(old, hashes)
		if err != nil {
			fail("root at %d: %v", old, err)
		}
		proof, err := tlog.ProveTree(size, old, hashes)
		if err != nil {
			fail("consistency %d -> %d: %v", old, size, err)
		}
		if err := tlog.CheckTree(proof, size, root, old, oldRoot); err != nil {
			fail("consistency %d -> %d: %v", old, size, err)
		}
		if len(os.Args) > 4 {
			want, err := hex.DecodeString(os.Args[4])
			if err != nil || len(want) != tlog.HashSize || string(want) != string(oldRoot[:]) {
				fail("root at %d is %x, the earlier checkpoint said %s", old, oldRoot[:], os.Args[4])
			}
		}
		fmt.Printf("ok: consistency %d -> %d checked (old root %s)\n", old, size, oldRoot)
	}
}
