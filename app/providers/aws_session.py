"""What one maider session owns on AWS besides its instance: an imported key pair and an SSH-only security group.

Both are named after the session's label and tagged ``maider``, made before RunInstances (reused when an earlier
attempt made them) and deleted once the instance is terminated. Only resources carrying both the name and the tag
are ever touched, so a user's own key pair or group of the same name is left alone.
"""
from __future__ import annotations

import logging
from typing import Any

from app.providers.aws_api import AwsApi
from app.providers.aws_errors import AlreadyExists
from app.providers.base import OWNER_TAG, NotFound, TransientError

log = logging.getLogger(__name__)

SSH_PORT = 22


def owner_tags(label: str) -> list[dict[str, str]]:
    """The tags every per-session resource carries."""
    return [{"Key": "Name", "Value": label}, {"Key": OWNER_TAG, "Value": ""}]


class SessionResources:
    """Key pair and security group of one label, through ``AwsApi`` (retries and typed errors)."""

    def __init__(self, api: AwsApi) -> None:
        self.api = api

    def ensure_key_pair(self, label: str, public_key: str) -> str:
        """Import the session's public key as a key pair named after the label (an earlier attempt's is reused)."""
        try:
            self.api.call(f"import key pair {label}", lambda: self._ec2().import_key_pair(
                KeyName=label, PublicKeyMaterial=public_key.encode(),
                TagSpecifications=[{"ResourceType": "key-pair", "Tags": owner_tags(label)}]))
        except AlreadyExists:
            log.info("aws: key pair %s exists already (an earlier attempt); using it", label)
        return label

    def ensure_security_group(self, label: str) -> str:
        """A security group named after the label that lets in TCP 22 only; returns its id.

        22 open to any address is acceptable: SSH takes keys only and maider pins the host key it generated for the
        VM, and vLLM and Open WebUI listen on the VM's localhost only (reached through the SSH tunnel), never here.
        Outbound stays open (AWS's default): the VM pulls packages, images and model weights.
        """
        group = self.find_group(label)
        if group is None:
            try:
                self.api.call(f"create security group {label}", lambda: self._ec2().create_security_group(
                    GroupName=label, Description=f"maider session {label}: SSH only",
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": owner_tags(label)}]))
            except AlreadyExists:
                pass
            group = self.find_group(label)
            if group is None:
                raise TransientError(f"AWS did not show the security group {label} it just created; try again")
        if not any(p.get("IpProtocol") == "tcp" and p.get("FromPort") == SSH_PORT
                   for p in group.get("IpPermissions") or ()):
            self._open_ssh(label, str(group["GroupId"]))
        return str(group["GroupId"])

    def remaining(self, label: str) -> list[str]:
        """What of the session is still on the account besides the instance."""
        left = [f"key pair {label}"] if self._find_key_pair(label) else []
        return left + ([f"security group {label}"] if self.find_group(label) else [])

    def delete(self, label: str) -> None:
        """Delete the session's security group and key pair; a group still in use is left for the next call."""
        group = self.find_group(label)
        if group is not None:
            try:
                self.api.call(f"delete security group {label}", lambda: self._ec2().delete_security_group(
                    GroupId=group["GroupId"]), thing="security group", attempts=1)
                log.info("aws: deleted security group %s", label)
            except NotFound:
                pass
            except TransientError as exc:  # DependencyViolation: the network interface is still detaching
                log.info("aws: security group %s not deleted yet (%s); next time", label, exc)
        if self._find_key_pair(label) is not None:
            try:
                self.api.call(f"delete key pair {label}", lambda: self._ec2().delete_key_pair(KeyName=label),
                              thing="key pair")
                log.info("aws: deleted key pair %s", label)
            except NotFound:
                pass

    def find_group(self, label: str) -> dict[str, Any] | None:
        groups = self.api.call(f"look up security group {label}", lambda: self._ec2().describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [label]}, {"Name": "tag-key", "Values": [OWNER_TAG]}],
        )["SecurityGroups"])
        return next((g for g in groups if g.get("GroupName") == label), None)

    def _find_key_pair(self, label: str) -> dict[str, Any] | None:
        keys = self.api.call(f"look up key pair {label}", lambda: self._ec2().describe_key_pairs(
            Filters=[{"Name": "key-name", "Values": [label]}, {"Name": "tag-key", "Values": [OWNER_TAG]}],
        )["KeyPairs"])
        return next((k for k in keys if k.get("KeyName") == label), None)

    def _open_ssh(self, label: str, group_id: str) -> None:
        rule = {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT,
                "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "SSH (keys only)"}],
                "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "SSH (keys only)"}]}
        try:
            self.api.call(f"open SSH in security group {label}", lambda: self._ec2().authorize_security_group_ingress(
                GroupId=group_id, IpPermissions=[rule]))
        except AlreadyExists:  # InvalidPermission.Duplicate: an earlier attempt added it
            pass

    def _ec2(self) -> Any:
        return self.api.client("ec2")
