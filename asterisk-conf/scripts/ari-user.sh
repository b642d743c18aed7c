#!/bin/sh
# Included by ari.conf (#exec): the ARI user from the container environment.
if [ -z "$ASTERISK_ARI_USER" ] || [ -z "$ASTERISK_ARI_PASSWORD" ]; then
    echo "ari-user.sh: ASTERISK_ARI_USER and ASTERISK_ARI_PASSWORD must be set" >&2
    exit 1
fi
printf '[%s]\ntype = user\nread_only = no\npassword = %s\n' \
    "$ASTERISK_ARI_USER" "$ASTERISK_ARI_PASSWORD"
