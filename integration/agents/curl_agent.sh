#!/bin/sh
# Agent: curl (reads http_proxy from the environment). Sends a stolen bearer token of its
# own; prints each response (status line, headers, body) after a marker line.
for url in "$@"; do
  echo "--- e2e-response"
  curl -sS -i --max-time 20 -H 'Authorization: Bearer stolen' "$url"
  echo
done
