#!/usr/bin/env bash
# Which of the unit's capabilities the daemon needs, measured in a booted container where
# oisp-sensor is installed (not part of CI: about 15 s per capability). For each capability, the
# unit is restarted with a bounding set without it, and the result is one line: whether it reached
# active, and whether a group member's tail saw the events of another user's HTTPS request and a
# session file was created and handed to its owner.
#   tests/system/capabilities.sh LEADER_PID    (the container's PID 1 on the host)
# The container must have the users alice (group oisp) and bob, and the replay server of the system
# test listening as api.openai.com (see test_booted_system.py).
set -uo pipefail
L=$1
caps=(${CAPS:-CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYS_RESOURCE CAP_SYSLOG CAP_SYS_PTRACE CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER CAP_NET_BIND_SERVICE CAP_SYS_MODULE})
in_c() { nsenter -t "$L" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
as_user() { local u=$1; shift; nsenter -t "$L" -a -- setpriv --reuid="$u" --regid="$u" --init-groups env -i PATH=/usr/bin:/bin HOME=/home/"$u" "$@"; }
dropin=/etc/systemd/system/oisp-sensor.service.d/caps.conf
for drop in "${1+none}" "${caps[@]}"; do
  keep=()
  for c in "${caps[@]}"; do [[ $c == "$drop" ]] || keep+=("$c"); done
  in_c mkdir -p "$(dirname $dropin)"
  printf '[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=%s\n' "${keep[*]}" | in_c tee $dropin >/dev/null
  in_c systemctl daemon-reload
  in_c rm -rf /var/cache/oisp-sensor/kernel-headers
  in_c systemctl restart oisp-sensor >/dev/null 2>&1
  state=$(in_c systemctl is-active oisp-sensor)
  seen=no; owned=no
  if [[ $state == active ]]; then
    as_user alice timeout 8 oisp-ctl --json tail -f --type ai.response >/tmp/cap-tail.$$ 2>&1 &
    sleep 1.5
    as_user bob curl -sS -o /dev/null --cacert /srv/oisp-test/pki/ca.pem https://api.openai.com/v1/chat/completions \
      -H 'Content-Type: application/json' --data @/srv/oisp-test/body.json
    wait
    grep -q '"ai.response"' /tmp/cap-tail.$$ && seen=yes
    as_user alice oisp-ctl session start "cap-${drop,,}" >/dev/null 2>&1
    file=$(in_c sh -c "ls -t /var/lib/oisp-sensor/sessions/cap-${drop,,}-* 2>/dev/null | head -n1")
    [[ -n $file ]] && [[ $(in_c stat -c %U "$file") == alice ]] && owned=yes
    as_user alice oisp-ctl session stop "cap-${drop,,}" >/dev/null 2>&1
  fi
  printf '%-22s %-8s tail-saw-other-user=%s session-file-owned=%s\n' "without $drop" "$state" "$seen" "$owned"
  [[ $state == active ]] || in_c journalctl -u oisp-sensor -n 3 --no-pager -o cat | sed 's/^/    /'
  rm -f /tmp/cap-tail.$$
done
in_c rm -f $dropin; in_c systemctl daemon-reload; in_c systemctl restart oisp-sensor
