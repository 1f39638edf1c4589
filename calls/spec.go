package calls

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/kiln-run/kiln/executor"
	"github.com/kiln-run/kiln/store"
)

// AnnotationNetwork is how a fn asks for the node's network namespace;
// kilnd grants it only with --allow-host-network.
const AnnotationNetwork = "kiln.io/network"

// functionSpec is everything a fn's container sees, built from the app,
// the fn and the fn's triggers. With the fn's timeouts it is all specKey
// reads, so any change to what a container sees, and nothing else, gives
// the next call a fresh container.
func functionSpec(app *store.App, fn *store.Fn, trigs []*store.Trigger) *executor.Function {
	cfg := make(map[string]string, len(app.Config)+len(fn.Config))
	for k, v := range app.Config {
		cfg[k] = v
	}
	for k, v := range fn.Config {
		cfg[k] = v
	}
	f := &executor.Function{
		AppName:     app.Name,
		FnName:      fn.Name,
		FnID:        fn.ID,
		Image:       fn.Image,
		Format:      fn.Format,
		MemoryMB:    fn.Memory,
		MilliCPUs:   fn.CPUs,
		Config:      cfg,
		TmpfsMB:     fn.TmpfsSize,
		HostNetwork: fmt.Sprint(fn.Annotations[AnnotationNetwork]) == "host",
	}
	// One container serves every trigger of its fn, so FN_PATH is the
	// fn's first http trigger, in creation order: the same for each of
	// its containers, and it moves only when that trigger does.
	for _, t := range trigs {
		if t.Type == "" || t.Type == store.TriggerHTTP {
			f.Path = t.Source
			break
		}
	}
	return f
}

// specKey names a container spec: equal keys mean containers started from
// one are fit to serve the other. It hashes the whole executor.Function
// (encoding/json sorts map keys, so equal specs encode equally) and the
// fn's timeouts, which a running container's pool entry was set up with.
// The image digest is added per call (see Service.call): it changes
// without any record changing. The hash is keyed with a secret of this
// process: the spec holds the fn's secrets, and a plain hash of a short
// one could be searched for.
func specKey(f *executor.Function, fn *store.Fn) string {
	b, err := json.Marshal(struct {
		Spec        *executor.Function
		Timeout     int
		IdleTimeout int
	}{f, fn.Timeout, fn.IdleTimeout})
	if err != nil {
		// A Function is strings, numbers and a string map: it always
		// encodes. Should it not, no two specs may share a key.
		return "unencodable:" + fn.ID + ":" + err.Error()
	}
	mac := hmac.New(sha256.New, specKeySalt[:])
	mac.Write(b)
	return fn.ID + "|" + hex.EncodeToString(mac.Sum(nil)[:12])
}

var specKeySalt = func() (b [32]byte) {
	_, _ = rand.Read(b[:])
	return b
}()
