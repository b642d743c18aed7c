#!/bin/sh
# Included by pjsip.conf (#exec) inside [transport-udp]: the address phones send RTP to.
if [ -n "$PUBLIC_IP" ]; then
    printf 'external_media_address = %s\n' "$PUBLIC_IP"
fi
