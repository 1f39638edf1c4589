#!/bin/sh
# example: a kiln function. The shell runtime speaks only the default
# format: one container per call, the request body on stdin, the response
# on stdout; stderr is the call's log (kiln logs example example).
name=$(cat)
name=${name:-World}
echo "greeting $name" >&2
printf 'Hello, %s!' "$name"
