"""Record real ansible-playbook output and job events for the unit tests.

Run from the repository root: `python tests/unit/data/ansible/record.py`. Each
scenario runs ansible-playbook over the local connection with ansible-runner's
`awx_display` callback, exactly as the driver does, and stores the output lines
(stdout and stderr merged) and the callback's partial event files as one JSON file.
Dry runs (`check_mode_false`) use iacorch's own stdout callback, as the driver does.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).parent

PLAYBOOK_OK = """
- name: Configure
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the motd
      ansible.builtin.copy: {content: "hello {{ greeting }}\\n", dest: "{{ target }}"}
    - name: Never on this host
      ansible.builtin.debug: {msg: never}
      when: false
    - name: Publish outputs
      ansible.builtin.set_stats: {data: {motd: "{{ target }}", replicas: 2}}
    - name: Publish per host
      ansible.builtin.set_stats: {data: {only_here: true}, per_host: true}
"""

PLAYBOOK_FAIL = """
- name: Break things
  hosts: all
  gather_facts: false
  tasks:
    - name: Tolerated failure
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - name: Loop over disks
      ansible.builtin.fail: {msg: "disk {{ item }} is full"}
      loop: [sda]
      when: item == "sdb"
    - name: Check free space
      ansible.builtin.fail: {msg: "disk /data is 99% full"}
"""

PLAYBOOK_CHECK_MODE_FALSE = """
- name: Configure
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the motd
      ansible.builtin.copy: {content: "hello {{ greeting }}\\n", dest: "{{ target }}"}
      check_mode: false
    - name: Write the banners
      ansible.builtin.copy:
        content: "{{ item }} {{ greeting }}\\n"
        dest: "{{ target }}.{{ item }}"
      loop: [one, two]
    - name: Run a script
      ansible.builtin.command: "touch {{ target }}.ran"
      check_mode: false
"""

PLAYBOOK_RESCUED = """
- name: Probe and fail
  hosts: all
  gather_facts: false
  tasks:
    - name: Probe the cache
      block:
        - name: Expected failure
          ansible.builtin.command: /bin/false
      rescue:
        - name: Fall back to a cold start
          ansible.builtin.debug: {msg: cold start}
    - name: Tolerated failure
      ansible.builtin.command: /bin/false
      ignore_errors: true
    - name: Check free space
      ansible.builtin.fail: {msg: "disk /data is 99% full"}
"""

PLAYBOOK_NO_HOSTS = """
- name: Nobody
  hosts: webservers
  gather_facts: false
  tasks:
    - ansible.builtin.debug: {msg: unreachable code}
"""

INVENTORY = ('localhost ansible_connection=local '
             'ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
             'ghost ansible_host=127.0.0.1 ansible_port=1 ansible_connection=ssh\n')


def record(name: str, playbook: str, args: list[str], before: str | None = None,
           dry_run: bool = False) -> None:
    from ansible_runner.utils import get_callback_dir

    from iacorch.drivers.ansible_check import dry_run_env

    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "job_events").mkdir()
        (scratch / "play.yml").write_text(playbook)
        (scratch / "hosts").write_text(INVENTORY)
        target = scratch / "motd"
        if before is not None:
            target.write_text(before)
        env = {**os.environ, "ANSIBLE_CALLBACK_PLUGINS": get_callback_dir(),
               "ANSIBLE_STDOUT_CALLBACK": "awx_display", "AWX_ISOLATED_DATA_DIR": scratch_dir,
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False"}
        env = dry_run_env(env) if dry_run else env
        argv = ["ansible-playbook", "-i", str(scratch / "hosts"), "-e", "greeting=world",
                "-e", f"target={target}", *args, str(scratch / "play.yml")]
        done = subprocess.run(argv, env=env, cwd=scratch, capture_output=False,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        assert not (dry_run and list(scratch.glob("motd*"))), "a dry run changed nothing"
        partials = {p.name.removesuffix("-partial.json"): json.loads(p.read_text())
                    for p in sorted((scratch / "job_events").glob("*-partial.json"))}
    text = done.stdout.decode().replace(scratch_dir, "/scratch")
    fixture = {"scenario": name, "argv_tail": args, "rc": done.returncode,
               "lines": text.split("\n"),
               "partials": json.loads(json.dumps(partials).replace(scratch_dir, "/scratch"))}
    (HERE / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"{name}: rc={done.returncode}, {len(partials)} events")


if __name__ == "__main__":
    record("apply_ok", PLAYBOOK_OK, ["--limit", "localhost"])
    record("check_diff", PLAYBOOK_OK, ["--limit", "localhost", "--check", "--diff"],
           before="hello old\n")
    record("failed", PLAYBOOK_FAIL, ["--limit", "localhost"])
    record("rescued", PLAYBOOK_RESCUED, ["--limit", "localhost"])
    record("unreachable", PLAYBOOK_OK, [])
    record("no_hosts", PLAYBOOK_NO_HOSTS, [])
    record("check_mode_false", PLAYBOOK_CHECK_MODE_FALSE,
           ["--limit", "localhost", "--check", "--diff"], dry_run=True)
