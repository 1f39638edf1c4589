package main

import (
	"fmt"
	"net/http"
	"runtime"

	"github.com/spf13/cobra"
)

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of kiln and, when reachable, kilnd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			clientVersion := fmt.Sprintf("%s (%s %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			// An unreachable server is reported, not an error: version is
			// what people run to find out what they have.
			server := ""
			var serverErr error
			where := ""
			if cl, err := c.client(); err != nil {
				serverErr = err
			} else {
				var v struct {
					Version string `json:"version"`
				}
				if _, err := cl.jsonCall(cmd.Context(), http.MethodGet, "/version", nil, nil, &v); err != nil {
					serverErr = err
				} else {
					server = v.Version
				}
				where = cl.base.String()
			}
			if c.structured() {
				out := map[string]string{"client": Version}
				if serverErr == nil {
					out["server"] = server
				} else {
					out["server_error"] = serverErr.Error()
				}
				return c.printValue(out)
			}
			fmt.Fprintf(c.stdout, "kiln   %s\n", clientVersion)
			if serverErr != nil {
				fmt.Fprintf(c.stdout, "kilnd  unknown (%v)\n", serverErr)
			} else {
				fmt.Fprintf(c.stdout, "kilnd  %s (%s)\n", orDash(server), where)
			}
			return nil
		},
	}
}
