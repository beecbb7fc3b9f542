"""The simulated VM: a paramiko SSH server, a fake vLLM and a placeholder Open WebUI on this laptop.

It answers every command in ``app.domain.vm_contract`` as a real Ubuntu GPU VM would, with compressed timings and
scriptable failures. ``maider serve --demo`` runs its VMs on it, and tests drive the real engine against it.
"""
