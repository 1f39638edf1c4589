package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

func (c *cli) imagesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "images",
		Aliases: []string{"image"},
		Short:   "Manage the images kilnd runs fns from",
	}
	cmd.AddCommand(c.imagesImportCmd(), c.imagesListCmd(), c.imagesPullCmd())
	return cmd
}

func (c *cli) imagesImportCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "import FILE",
		Short: "Upload an OCI or docker image archive (tar) to kilnd",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			names, raw, err := c.importArchive(cmd.Context(), cl, args[0])
			if err != nil {
				return err
			}
			return c.showImported(names, raw)
		},
	}
}

// importArchive streams a tar to kilnd with progress on stderr and returns
// the names of the images it now has.
func (c *cli) importArchive(ctx context.Context, cl *client, path string) ([]string, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s is not a regular file", path)
	}
	prog := newUploadProgress(f, c.stderr, "importing "+filepath.Base(path), fi.Size())
	raw, err := cl.do(ctx, request{
		Method:        http.MethodPost,
		Path:          "/v2/images/import",
		Header:        http.Header{"Content-Type": {"application/x-tar"}},
		Body:          prog,
		ContentLength: fi.Size(),
	})
	prog.finish()
	if err != nil {
		return nil, nil, err
	}
	var ans struct {
		Images []json.RawMessage `json:"images"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return nil, raw, fmt.Errorf("decoding import answer: %w", err)
	}
	names := make([]string, 0, len(ans.Images))
	for _, im := range ans.Images {
		// kilnd answers names; accept objects too, so a richer answer
		// later does not break older CLIs.
		var name string
		if json.Unmarshal(im, &name) != nil {
			var obj imageResource
			if json.Unmarshal(im, &obj) == nil {
				name = obj.Name
			}
		}
		if name != "" {
			names = append(names, name)
		}
	}
	return names, raw, nil
}

func (c *cli) showImported(names []string, raw []byte) error {
	if c.jsonOutput() {
		return printJSON(c.stdout, raw)
	}
	if len(names) == 0 {
		fmt.Fprintln(c.stderr, "kiln: the archive held no named images")
	}
	for _, n := range names {
		fmt.Fprintf(c.stdout, "imported %s\n", n)
	}
	return nil
}

func (c *cli) imagesListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			imgs, raw, err := listInto[imageResource](cmd.Context(), cl, "/v2/images", nil)
			if err != nil {
				return err
			}
			if c.jsonOutput() {
				return printItems(c.stdout, raw)
			}
			rows := make([][]string, 0, len(imgs))
			for _, im := range imgs {
				rows = append(rows, []string{im.Name, orDash(im.Digest), fmtBytes(im.Size)})
			}
			return printTable(c.stdout, []string{"NAME", "DIGEST", "SIZE"}, rows)
		},
	}
}

func (c *cli) imagesPullCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "pull REF",
		Short: "Have kilnd pull an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stderr, "pulling %s...\n", args[0])
			raw, err := cl.jsonCall(cmd.Context(), http.MethodPost, "/v2/images/pull", nil,
				map[string]string{"ref": args[0]}, nil)
			if err != nil {
				return err
			}
			// The answer's shape beyond success is not part of the
			// contract; show a name and digest when they are there.
			var im imageResource
			_ = json.Unmarshal(raw, &im)
			if c.jsonOutput() {
				return printJSON(c.stdout, raw)
			}
			name := im.Name
			if name == "" {
				name = args[0]
			}
			if im.Digest != "" {
				fmt.Fprintf(c.stdout, "pulled %s %s\n", name, im.Digest)
			} else {
				fmt.Fprintf(c.stdout, "pulled %s\n", name)
			}
			return nil
		},
	}
}
