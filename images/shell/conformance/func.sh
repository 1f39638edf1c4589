#!/bin/sh
# The shell side of kiln's FDK conformance check: every runtime has a
# function answering the same JSON. The shell runtime speaks the default
# format: the request body on stdin, the answer on stdout, request headers
# in FN_HEADER_<Name> variables ("-" read as "_", see ../run.awk). awk does the JSON, since busybox has no
# JSON tool; a body that looks like a JSON object, array, string, number
# or literal is passed through as is, anything else becomes a string.
exec awk '
function esc(s) {
	gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s)
	gsub(/\t/, "\\t", s); gsub(/\r/, "\\r", s); gsub(/\n/, "\\n", s)
	return "\"" s "\""
}
function strOrNull(name) { return (name in ENVIRON) ? esc(ENVIRON[name]) : "null" }
{ body = (NR == 1) ? $0 : body "\n" $0 }
END {
	t = body; sub(/^[ \t\r\n]+/, "", t); sub(/[ \t\r\n]+$/, "", t)
	if (t ~ /^\{.*\}$/ || t ~ /^\[.*\]$/ || t ~ /^".*"$/ || t ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/ || t == "true" || t == "false" || t == "null")
		payload = t
	else
		payload = esc(body)
	printf "{\"normal\":\"Hello World!\",\"env1\":%s,\"payload\":%s,\"header\":%s}\n", strOrNull("ENV1"), payload, strOrNull("FN_HEADER_X_Test")
}'
