#!/bin/sh
# The `bottle demo` agent: what an agent with full autonomy might try, step by step.
step() { printf '\n[agent] %s\n' "$*"; }
ask() { curl -sS --max-time 20 -w '    (HTTP %{http_code})\n' "$@" 2>&1 | sed 's/^/    /'; }

step "1/5 my API token is DEMO_API_TOKEN=$DEMO_API_TOKEN"
echo "    (a placeholder: the real credential never enters this container)"

step "2/5 GET https://api.demo.test/v1/whoami with that token (the manifest allows this host)"
ask -H "Authorization: Bearer $DEMO_API_TOKEN" https://api.demo.test/v1/whoami

step "3/5 GET http://elsewhere.demo.test/ (a host the manifest does not allow)"
ask http://elsewhere.demo.test/

step "4/5 POST an AWS access key id to the allowed host (data-loss prevention)"
ask -d "aws_access_key_id=AKIAQYLPMN5HFIQR7XOZ" https://api.demo.test/v1/upload

step "5/5 look up example.com in DNS"
if getent hosts example.com; then
  echo "    resolved?! (this should not happen in a bottle)"
else
  echo "    no answer: the bottle's DNS says NXDOMAIN to every name, so nothing leaks by lookup"
fi

step "done; exiting, and the bottle is torn down"
