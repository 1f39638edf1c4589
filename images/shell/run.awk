# run.awk starts a shell function. kiln passes each request header as
# FN_HEADER_<Name> with the header's own spelling, such as FN_HEADER_X-Test,
# and no POSIX shell keeps a variable whose name holds a "-": busybox sh
# drops it before the script could read it. awk sees the whole environment,
# so this launcher exports every such variable again with "_" for each
# character a shell name cannot hold (FN_HEADER_X_Test), then runs the
# script given as its argument. stdin and stdout pass through untouched,
# and the script's exit status is the function's.
function q(s) {
	gsub(/'/, "'\\''", s)
	return "'" s "'"
}
BEGIN {
	if (ARGC < 2) {
		print "run.awk: no script to run" > "/dev/stderr"
		exit 2
	}
	cmd = ""
	for (k in ENVIRON) {
		if (k ~ /^[A-Za-z_][A-Za-z0-9_]*$/)
			continue
		n = k
		gsub(/[^A-Za-z0-9_]/, "_", n)
		if (n ~ /^[0-9]/ || n in ENVIRON)
			continue
		cmd = cmd "export " n "=" q(ENVIRON[k]) "; "
	}
	script = ARGV[1]
	args = ""
	for (i = 2; i < ARGC; i++)
		args = args " " q(ARGV[i])
	rc = system(cmd "exec /bin/sh " q(script) args)
	# busybox reports death by a signal as 256 + the signal; a shell
	# would say 128 + the signal.
	if (rc >= 256)
		rc = 128 + rc - 256
	exit rc
}
