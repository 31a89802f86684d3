#!/bin/sh
# First boot of a lab PC made from the shared base image: take the name and the SSH
# host keys the lab gives it through QEMU's fw_cfg (opt/inplace/*), so no two PCs,
# nor the base image, share an identity and the lab knows each PC's keys up front.
set -eu
given=/sys/firmware/qemu_fw_cfg/by_name/opt/inplace
modprobe qemu_fw_cfg 2>/dev/null || true
if [ -r "$given/hostname/raw" ]; then
  name=$(cat "$given/hostname/raw")
  echo "$name" >/etc/hostname
  hostname "$name"
  sed -i "s/^127\.0\.1\.1[[:space:]].*/127.0.1.1\t$name/" /etc/hosts
fi
rm -f /etc/ssh/ssh_host_*
umask 077
for type in rsa ecdsa ed25519; do
  if [ -r "$given/ssh_host_${type}_key/raw" ]; then
    cat "$given/ssh_host_${type}_key/raw" >"/etc/ssh/ssh_host_${type}_key"
    ssh-keygen -y -f "/etc/ssh/ssh_host_${type}_key" >"/etc/ssh/ssh_host_${type}_key.pub"
    chmod 0644 "/etc/ssh/ssh_host_${type}_key.pub"
  fi
done
# Started outside the lab (no keys given): sshd still needs keys of its own.
ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
mkdir -p /var/lib/inplace-lab
touch /var/lib/inplace-lab/first-boot-done
sync
