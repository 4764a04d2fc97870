// Command tlogcheck checks a C2SP tlog-tiles log (c2sp.org/tlog-tiles) with Go's own
// golang.org/x/mod/sumdb/tlog and sumdb/note: independent evidence that audit-ledger's tiles,
// entry bundles, checkpoints and proofs are the RFC 6962 / RFC 9162 hashes Go computes.
//
//	tlogcheck -vkey KEY (-dir DIR | -url URL) [-token T] [-api URL] [-old 1,255,256] [-sample N]
//
// It reads <prefix>/checkpoint and verifies its Ed25519 signature against KEY (note.Open),
// then, through tlog.TileHashReader (which authenticates every tile against the checkpoint's
// root), recomputes the root with tlog.TreeHash, checks every entry of every entry bundle
// against the level-0 tiles, proves and checks (tlog.ProveRecord / CheckRecord) a sample of
// entries, and proves and checks (tlog.ProveTree / CheckTree) consistency from each -old size.
// With -api it also fetches the service's /v1/log/proof/inclusion and /v1/log/proof/consistency
// for the same entries and sizes and requires them to equal Go's proofs hash for hash.
//
// Exit status: 0 all checks pass, 1 a check fails, 2 usage or I/O error. The last line of
// output on success is a JSON summary.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tlog-tiles fixes the tile height at 8 (256 hashes per full tile).
const height = 8

type source struct {
	dir, url, token string
	fetches         int
}

type ioError struct{ error }

func (s *source) get(path string) ([]byte, error) {
	s.fetches++
	if s.dir != "" {
		data, err := os.ReadFile(filepath.Join(s.dir, filepath.FromSlash(path)))
		if err != nil {
			return nil, ioError{err}
		}
		return data, nil
	}
	req, err := http.NewRequest("GET", strings.TrimSuffix(s.url, "/")+"/"+path, nil)
	if err != nil {
		return nil, ioError{err}
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, ioError{err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, ioError{err}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// c2spPath maps Go's tile path ("tile/8/0/x001/234.p/5", "tile/8/data/000") to the C2SP one
// ("tile/0/x001/234.p/5", "tile/entries/000"): tlog-tiles drops the height and names data
// tiles "entries"; the index encoding is the same.
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", height))
	if strings.HasPrefix(p, "data/") {
		p = "entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

// tileReader serves tlog.TileHashReader from the source. Caching raw tiles is safe: the hash
// reader authenticates the tiles it uses against the tree on every call.
type tileReader struct {
	src   *source
	cache map[tlog.Tile][]byte
}

func (r *tileReader) Height() int { return height }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, ok := r.cache[t]
		if !ok {
			var err error
			data, err = r.src.get(c2spPath(t))
			if err != nil {
				return nil, err
			}
			if len(data) != t.W*tlog.HashSize {
				return nil, fmt.Errorf("%s: %d bytes, want %d", c2spPath(t), len(data), t.W*tlog.HashSize)
			}
			r.cache[t] = data
		}
		out[i] = data
	}
	return out, nil
}

func (r *tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

func parseCheckpoint(msg []byte, vkey string) (origin string, tree tlog.Tree, err error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return "", tree, fmt.Errorf("verifier key: %v", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return "", tree, fmt.Errorf("checkpoint signature: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		return "", tree, errors.New("checkpoint body has fewer than 3 lines")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 1 {
		return "", tree, errors.New("checkpoint size is not a positive integer")
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != tlog.HashSize {
		return "", tree, errors.New("checkpoint root is not a base64 SHA-256 hash")
	}
	if lines[0] != v.Name() {
		return "", tree, fmt.Errorf("checkpoint origin %q is not the key name %q", lines[0], v.Name())
	}
	var h tlog.Hash
	copy(h[:], root)
	return lines[0], tlog.Tree{N: size, Hash: h}, nil
}

type api struct {
	base, token string
}

func (a api) proof(path string) ([]tlog.Hash, error) {
	src := source{url: a.base, token: a.token}
	body, err := src.get(path)
	if err != nil {
		return nil, err
	}
	var out struct {
		Hashes []string `json:"hashes"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	hashes := make([]tlog.Hash, len(out.Hashes))
	for i, x := range out.Hashes {
		b, err := hex.DecodeString(x)
		if err != nil || len(b) != tlog.HashSize {
			return nil, fmt.Errorf("%s: bad hash", path)
		}
		copy(hashes[i][:], b)
	}
	return hashes, nil
}

func sameHashes(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func splitBundle(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("entry bundle ends inside a length prefix")
		}
		n := int(data[0])<<8 | int(data[1])
		if len(data) < 2+n {
			return nil, errors.New("entry bundle ends inside an entry")
		}
		out = append(out, data[2:2+n])
		data = data[2+n:]
	}
	return out, nil
}

type summary struct {
	Origin           string `json:"origin"`
	Size             int64  `json:"size"`
	Root             string `json:"root"`
	Entries          int64  `json:"entries"`
	InclusionChecked int    `json:"inclusion_checked"`
	ConsistencyOld   int    `json:"consistency_checked"`
	APIProofsEqual   int    `json:"api_proofs_equal"`
	Fetches          int    `json:"fetches"`
}

func run() (int, error) {
	vkey := flag.String("vkey", "", "verifier key (name+hash+base64)")
	dir := flag.String("dir", "", "published directory (DIR of 'audit-ledger tiles publish')")
	url := flag.String("url", "", "tiles prefix URL (e.g. http://host/tlog)")
	token := flag.String("token", "", "bearer token for -url and -api")
	apiBase := flag.String("api", "", "service base URL: compare /v1/log/proof/* with Go's proofs")
	olds := flag.String("old", "", "comma-separated older tree sizes to prove consistency from")
	sample := flag.Int64("sample", 500, "entries whose inclusion is proved (spread over the log; all if fewer)")
	flag.Parse()
	if *vkey == "" || (*dir == "") == (*url == "") {
		return 2, errors.New("need -vkey and exactly one of -dir, -url")
	}
	src := &source{dir: *dir, url: *url, token: *token}
	msg, err := src.get("checkpoint")
	if err != nil {
		return 2, err
	}
	origin, tree, err := parseCheckpoint(msg, *vkey)
	if err != nil {
		return 1, err
	}
	thr := tlog.TileHashReader(tree, &tileReader{src: src, cache: map[tlog.Tile][]byte{}})
	root, err := tlog.TreeHash(tree.N, thr)
	if err != nil {
		return 1, fmt.Errorf("tree hash from tiles: %v", err)
	}
	if root != tree.Hash {
		return 1, errors.New("tiles do not hash to the checkpoint root")
	}
	sum := summary{Origin: origin, Size: tree.N, Root: base64.StdEncoding.EncodeToString(root[:])}
	a := api{base: *apiBase, token: *token}

	// Every entry of every bundle against the level-0 hashes (authenticated by the reader).
	leafHashes := make([]tlog.Hash, 0, tree.N)
	for n := int64(0); n*256 < tree.N; n++ {
		w := tree.N - n*256
		if w > 256 {
			w = 256
		}
		t := tlog.Tile{H: height, L: -1, N: n, W: int(w)}
		data, err := src.get(c2spPath(t))
		if err != nil {
			return 2, err
		}
		leaves, err := splitBundle(data)
		if err != nil {
			return 1, fmt.Errorf("%s: %v", c2spPath(t), err)
		}
		if int64(len(leaves)) != w {
			return 1, fmt.Errorf("%s: %d entries, want %d", c2spPath(t), len(leaves), w)
		}
		idx := make([]int64, w)
		for j := range idx {
			idx[j] = tlog.StoredHashIndex(0, n*256+int64(j))
		}
		hashes, err := thr.ReadHashes(idx)
		if err != nil {
			return 1, fmt.Errorf("level-0 hashes of %s: %v", c2spPath(t), err)
		}
		for j, leaf := range leaves {
			if tlog.RecordHash(leaf) != hashes[j] {
				return 1, fmt.Errorf("entry %d does not hash to its level-0 tile hash", n*256+int64(j))
			}
		}
		leafHashes = append(leafHashes, hashes...)
		sum.Entries += w
	}

	// Inclusion proofs for a spread of entries, always the first and the last.
	step := tree.N / *sample
	if step < 1 {
		step = 1
	}
	for i := int64(0); i < tree.N; i += step {
		for _, k := range []int64{i, tree.N - 1} {
			if k != i && i+step < tree.N {
				continue
			}
			p, err := tlog.ProveRecord(tree.N, k, thr)
			if err != nil {
				return 1, fmt.Errorf("prove entry %d: %v", k, err)
			}
			if err := tlog.CheckRecord(p, tree.N, tree.Hash, k, leafHashes[k]); err != nil {
				return 1, fmt.Errorf("check entry %d: %v", k, err)
			}
			sum.InclusionChecked++
			if a.base != "" {
				ours, err := a.proof(fmt.Sprintf("v1/log/proof/inclusion?seq=%d&tree_size=%d", k, tree.N))
				if err != nil {
					return 2, err
				}
				if !sameHashes(ours, p) {
					return 1, fmt.Errorf("service inclusion proof for entry %d differs from Go's", k)
				}
				sum.APIProofsEqual++
			}
		}
	}

	// Consistency from older sizes.
	for _, f := range strings.Split(*olds, ",") {
		if f == "" {
			continue
		}
		old, err := strconv.ParseInt(f, 10, 64)
		if err != nil || old < 1 || old > tree.N {
			return 2, fmt.Errorf("bad -old size %q", f)
		}
		oldRoot, err := tlog.TreeHash(old, thr)
		if err != nil {
			return 1, fmt.Errorf("tree hash %d: %v", old, err)
		}
		p, err := tlog.ProveTree(tree.N, old, thr)
		if err != nil {
			return 1, fmt.Errorf("prove tree %d -> %d: %v", old, tree.N, err)
		}
		if err := tlog.CheckTree(p, tree.N, tree.Hash, old, oldRoot); err != nil {
			return 1, fmt.Errorf("check tree %d -> %d: %v", old, tree.N, err)
		}
		sum.ConsistencyOld++
		if a.base != "" {
			ours, err := a.proof(fmt.Sprintf("v1/log/proof/consistency?first=%d&second=%d", old, tree.N))
			if err != nil {
				return 2, err
			}
			if !sameHashes(ours, p) {
				return 1, fmt.Errorf("service consistency proof %d -> %d differs from Go's", old, tree.N)
			}
			sum.APIProofsEqual++
		}
	}
	sum.Fetches = src.fetches
	out, _ := json.Marshal(sum)
	fmt.Println(string(out))
	return 0, nil
}

func main() {
	code, err := run()
	if err != nil {
		var ioe ioError
		if errors.As(err, &ioe) && code == 1 {
			code = 2
		}
		fmt.Fprintln(os.Stderr, "tlogcheck:", err)
	}
	os.Exit(code)
}
