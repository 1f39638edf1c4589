package main

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

func TestInvokeBodyFromStdin(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /invoke/fn1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Fn-Call-Id", "call-1")
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("hello, " + string(mustRead(r))))
	})
	res := api.run(strings.NewReader("world"), "invoke", "myapp", "hello", "--content-type", "text/plain", "-H", "X-Trace: abc")
	if res.code != 0 {
		t.Fatalf("exit %d stderr %q", res.code, res.stderr)
	}
	if res.stdout != "hello, world" {
		t.Errorf("stdout = %q", res.stdout)
	}
	req := api.only("POST", "/invoke/fn1")
	if string(req.Body) != "world" || req.Header.Get("Content-Type") != "text/plain" || req.Header.Get("X-Trace") != "abc" {
		t.Errorf("request body %q headers %v", req.Body, req.Header)
	}
	if req.Header.Get("Fn-Invoke-Type") != "" {
		t.Errorf("sync call sent Fn-Invoke-Type %q", req.Header.Get("Fn-Invoke-Type"))
	}
	if res.stderr != "" {
		t.Errorf("stderr = %q, want nothing without --verbose", res.stderr)
	}
}

func TestInvokeBodyFlagAndVerbose(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /invoke/fn1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Fn-Call-Id", "call-2")
		w.Write(mustRead(r))
	})
	res := api.run(strings.NewReader("ignored"), "invoke", "myapp", "hello", "--body", "from flag", "--verbose")
	if res.code != 0 || res.stdout != "from flag" {
		t.Errorf("exit %d stdout %q", res.code, res.stdout)
	}
	wantContains(t, "stderr", res.stderr, "HTTP/1.1 200 OK", "Fn-Call-Id: call-2")
}

func TestInvoke502PrintsBodyAndFails(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /invoke/fn1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Fn-Call-Id", "call-3")
		writeJSONBody(w, http.StatusBadGateway, map[string]any{"message": "function crashed: exit status 2", "code": 502})
	})
	res := api.run(nil, "invoke", "myapp", "hello")
	if res.code == 0 {
		t.Fatal("exit 0 on a 502")
	}
	wantContains(t, "stdout", res.stdout, `"message":"function crashed: exit status 2"`)
	wantContains(t, "stderr", res.stderr, "Error: call answered 502 Bad Gateway: function crashed: exit status 2")
	if strings.Count(res.stderr, "Error:") != 1 {
		t.Errorf("stderr = %q, want one error line", res.stderr)
	}
}

func TestInvokeFunction4xxBodyKept(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /invoke/fn1", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte("short and stout"))
	})
	res := api.run(nil, "invoke", "myapp", "hello")
	if res.code != 1 || res.stdout != "short and stout" {
		t.Errorf("exit %d stdout %q", res.code, res.stdout)
	}
	wantContains(t, "stderr", res.stderr, "418")
}

func TestInvokeDetached(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /invoke/fn1", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Fn-Invoke-Type") != "detached" {
			t.Errorf("Fn-Invoke-Type = %q", r.Header.Get("Fn-Invoke-Type"))
		}
		w.Header().Set("Fn-Call-Id", "call-4")
		writeJSONBody(w, http.StatusAccepted, map[string]string{"call_id": "call-4"})
	})
	res := api.run(nil, "invoke", "myapp", "hello", "--detached", "--body", "x")
	if res.code != 0 || res.stdout != "call-4\n" {
		t.Errorf("exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
}

func TestInvokeLogsWaitsForLog(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	api.handle("POST /invoke/fn1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Fn-Call-Id", "call-5")
		w.Write([]byte("ok\n"))
	})
	var tries atomic.Int32
	api.handle("GET /v2/fns/fn1/calls/call-5/log", func(w http.ResponseWriter, r *http.Request) {
		// The log lands a moment after the response, as it may in kilnd.
		if tries.Add(1) == 1 {
			writeJSONBody(w, http.StatusNotFound, map[string]any{"message": "no log yet", "code": 404})
			return
		}
		w.Write([]byte("debug: handled\n"))
	})
	res := api.run(nil, "invoke", "myapp", "hello", "--logs")
	if res.code != 0 || res.stdout != "ok\n" {
		t.Errorf("exit %d stdout %q", res.code, res.stdout)
	}
	if res.stderr != "debug: handled\n" {
		t.Errorf("stderr = %q, want the call log", res.stderr)
	}
}

func TestInvokeUnknownFn(t *testing.T) {
	api := newFakeAPI(t)
	api.withApp()
	res := api.run(nil, "invoke", "myapp", "missing")
	if res.code != 1 || res.stderr != "Error: fn \"missing\" not found in app \"myapp\"\n" {
		t.Errorf("exit %d stderr %q", res.code, res.stderr)
	}
	if len(api.requests("POST", "/invoke/fn1")) != 0 {
		t.Error("invoked anyway")
	}
}
