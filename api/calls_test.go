package api

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-run/kiln/store"
)

func TestCallRoutes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, Config{})
	a := e.app("a")
	f, g := e.fn(a.ID, "f"), e.fn(a.ID, "g")

	base := time.Now().Add(-time.Hour)
	var ids []string
	for i := 0; i < 5; i++ {
		created := base.Add(time.Duration(i) * time.Second)
		id := e.st.NewID()
		ids = append(ids, id)
		c := &store.Call{ID: id, FnID: f.ID, Status: store.CallSuccess, CreatedAt: created,
			Request: &store.CallRequest{Method: "POST", URL: "http://x/secret", Body: []byte("secret body")}}
		if err := e.st.CreateCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.AppendCallLog(ctx, f.ID, ids[0], []byte("hello from stderr\n"), 1<<10); err != nil {
		t.Fatal(err)
	}

	// Newest first, across pages.
	var got []string
	path := "/v2/fns/" + f.ID + "/calls?per_page=2"
	for pages := 0; ; pages++ {
		l := ok[list[store.Call]](e, "GET", path, nil)
		for _, c := range l.Items {
			got = append(got, c.ID)
		}
		if *l.NextCursor == "" || pages > 5 {
			break
		}
		path = "/v2/fns/" + f.ID + "/calls?per_page=2&cursor=" + *l.NextCursor
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	if l := ok[list[store.Call]](e, "GET", "/v2/fns/"+g.ID+"/calls", nil); len(l.Items) != 0 || *l.NextCursor != "" {
		t.Fatalf("calls of an uncalled fn = %+v", l)
	}

	rec := e.do("GET", "/v2/fns/"+f.ID+"/calls/"+ids[0], nil)
	wantStatus(t, rec, 200)
	var call map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &call); err != nil {
		t.Fatal(err)
	}
	if call["id"] != ids[0] || call["status"] != "success" || call["fn_id"] != f.ID || call["app_id"] != a.ID {
		t.Fatalf("call = %v", call)
	}
	// The stored request of a detached call is not the API's business.
	if strings.Contains(rec.Body.String(), "secret") || call["request"] != nil {
		t.Fatalf("call answer leaks the request: %s", rec.Body)
	}

	rec = e.do("GET", "/v2/fns/"+f.ID+"/calls/"+ids[0]+"/log", nil)
	wantStatus(t, rec, 200)
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("log Content-Type = %q", ct)
	}
	if rec.Body.String() != "hello from stderr\n" {
		t.Fatalf("log = %q", rec.Body)
	}
	rec = e.do("GET", "/v2/fns/"+f.ID+"/calls/"+ids[1]+"/log", nil)
	wantStatus(t, rec, 200)
	if rec.Body.Len() != 0 {
		t.Fatalf("log of a silent call = %q", rec.Body)
	}

	for _, tt := range []struct {
		name, path, mentions string
		status               int
	}{
		{"calls of unknown fn", "/v2/fns/nope/calls", `fn "nope" not found`, 404},
		{"unknown call", "/v2/fns/" + f.ID + "/calls/nope", `call "nope"`, 404},
		{"call of another fn", "/v2/fns/" + g.ID + "/calls/" + ids[0], ids[0], 404},
		{"log of unknown call", "/v2/fns/" + f.ID + "/calls/nope/log", `call "nope"`, 404},
		{"bad cursor", "/v2/fns/" + f.ID + "/calls?cursor=***", "cursor", 400},
		{"bad per_page", "/v2/fns/" + f.ID + "/calls?per_page=many", "per_page", 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantStatus(t, e.do("GET", tt.path, nil), tt.status, tt.mentions)
		})
	}
}
