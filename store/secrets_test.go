package store

import (
	"context"
	"errors"
	"testing"

	"github.com/kiln-run/kiln/errdefs"
)

func testSecretsStore(t *testing.T, fx *fixture) {
	ctx := context.Background()
	st := fx.newTest(t)
	app, _ := st.CreateApp(ctx, &App{Name: "a"})
	gen := st.Generation()
	if _, err := st.PutSecret(ctx, app.ID, "k", []byte("sealed-1")); err != nil {
		t.Fatal(err)
	}
	if st.Generation() == gen {
		t.Fatal("a secret change did not move the generation: cached specs would keep the old value")
	}
	first, _ := st.GetSecret(ctx, app.ID, "k")
	again, _ := st.PutSecret(ctx, app.ID, "k", []byte("sealed-2"))
	if !again.CreatedAt.Equal(first.CreatedAt) || string(again.Sealed) != "sealed-2" {
		t.Fatalf("replace: %+v after %+v", again, first)
	}
	list, err := st.ListSecrets(ctx, app.ID)
	if err != nil || len(list) != 1 || list[0].Name != "k" || list[0].Sealed != nil {
		t.Fatalf("list %+v, %v", list, err)
	}
	if _, err := st.CreateFn(ctx, &Fn{AppID: app.ID, Name: "f", Secrets: []string{"nope"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("fn naming a missing secret: %v", err)
	}
	fn, err := st.CreateFn(ctx, &Fn{AppID: app.ID, Name: "f", Secrets: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSecret(ctx, app.ID, "k"); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("deleting a used secret: %v", err)
	}
	if _, err := st.UpdateFn(ctx, fn.ID, func(f *Fn) error { f.Secrets = nil; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteSecret(ctx, app.ID, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSecret(ctx, app.ID, "k"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// Deleting the app takes its secrets.
	if _, err := st.PutSecret(ctx, app.ID, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DeleteApp(ctx, app.ID); err != nil {
		t.Fatal(err)
	}
	app2, _ := st.CreateApp(ctx, &App{Name: "b"})
	if list, _ := st.ListSecrets(ctx, app2.ID); len(list) != 0 {
		t.Fatalf("secrets of a deleted app survive: %+v", list)
	}
	if _, err := st.GetSecret(ctx, app.ID, "other"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a deleted app's secret: %v", err)
	}
}
