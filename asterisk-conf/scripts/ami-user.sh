#!/bin/sh
# Included by manager.conf (#exec): the AMI user from the container environment.
# $1: comma-separated networks allowed to log in.
if [ -z "$ASTERISK_AMI_USER" ] || [ -z "$ASTERISK_AMI_SECRET" ]; then
    echo "ami-user.sh: ASTERISK_AMI_USER and ASTERISK_AMI_SECRET must be set" >&2
    exit 1
fi
printf '[%s]\nsecret = %s\ndeny = 0.0.0.0/0.0.0.0\n' "$ASTERISK_AMI_USER" "$ASTERISK_AMI_SECRET"
echo "$1" | tr ',' '\n' | while read -r net; do
    [ -n "$net" ] && printf 'permit = %s\n' "$net"
done
printf 'read = system,call,agent,user,reporting\nwrite = system,call,originate,reporting\n'
