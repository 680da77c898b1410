#!/bin/sh
# Writes the secrets that docker-compose.yml mounts (one file each, random passwords), unless they exist:
#
#   deploy/compose/make-secrets.sh            # into deploy/compose/secrets/
#   deploy/compose/make-secrets.sh DIRECTORY  # elsewhere (then point docker-compose.yml's secrets: there)
#
#   rabbitmq-password        RabbitMQ's administrator password (user karnak), for broker-setup only
#   rabbitmq-credentials     the same user and password for RabbitMQ itself (conf.d syntax)
#   broker-<service>         the password of the broker user karnak-<service> of each gateway service
#                            (and broker-console, broker-operator), created by broker-setup on every start
#   postgres-password        the gateway's PostgreSQL password (user karnak), read by the postgres image too
#   grafana-admin-password   Grafana's admin password (monitoring profile)
#
# The broker users' list is shared/karnak_shared/broker_users.py's ALL_USERS (tests/deploy checks it).
# RabbitMQ and PostgreSQL take their password on their first start only (when their volume is empty):
# to change one later, change it in the server too (rabbitmqctl change_password, ALTER ROLE).
# The files are readable by everyone in a directory only its owner may enter: the containers, which
# run as other users (karnak 10001, rabbitmq 999, postgres 999, grafana 472), can read their bind mounts.
set -eu

dir=${1:-"$(dirname "$0")/secrets"}
mkdir -p "$dir"
chmod 700 "$dir"

# Hex only, so a password can go into an AMQP or PostgreSQL URL and a RabbitMQ conf file as it is.
random_password() {
  od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

write() {
  if [ -e "$dir/$1" ]; then
    echo "kept    $dir/$1"
    return
  fi
  umask 022
  printf '%s\n' "$2" > "$dir/$1"
  chmod 644 "$dir/$1"
  echo "created $dir/$1"
}

if [ -e "$dir/rabbitmq-password" ]; then
  rabbitmq_password=$(cat "$dir/rabbitmq-password")
else
  rabbitmq_password=$(random_password)
fi
write rabbitmq-password "$rabbitmq_password"
write rabbitmq-credentials "default_user = karnak
default_pass = $rabbitmq_password"
for user in receiver processor dicom-sender stow-sender kheops-sharer notifier monitor console operator; do
  write "broker-$user" "$(random_password)"
done
write postgres-password "$(random_password)"
write grafana-admin-password "$(random_password)"
