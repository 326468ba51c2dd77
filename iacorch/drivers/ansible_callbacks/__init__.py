"""Ansible plugins shipped with iacorch. ansible-playbook loads them from this directory
(the driver puts it on ANSIBLE_CALLBACK_PLUGINS); iacorch itself never imports them."""
