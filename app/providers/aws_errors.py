"""botocore failures -> maider's typed provider errors (the one place EC2/SSM error codes are read).

EC2 answers most refusals with HTTP 400 and a code (``InvalidInstanceID.NotFound`` is a 400 too), so the code
decides, not the status. Messages never carry credentials: AWS error texts do not echo them, and maider's own texts
name where credentials come from, never their values.
"""
from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError, ClientError, ConnectionError as BotoConnectionError, NoCredentialsError, NoRegionError,
    ParamValidationError, PartialCredentialsError, ProfileNotFound,
)

from app.providers.base import (
    AuthError, CapacityError, InvalidRequest, NotFound, ProviderError, RateLimited, TransientError,
)

_AUTH_CODES = frozenset({"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                         "ExpiredToken", "RequestExpired", "AccessDenied", "AccessDeniedException",
                         "UnrecognizedClientException"})
_CAPACITY_CODES = frozenset({"InsufficientInstanceCapacity", "InstanceLimitExceeded", "Unsupported",
                             "InsufficientCapacity"})
_THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
                             "RequestThrottled"})
_TRANSIENT_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable",
                              "InternalServerError", "DependencyViolation", "IncorrectState"})

PERMISSIONS = ("ec2:DescribeRegions, ec2:DescribeInstanceTypes, ec2:DescribeInstanceTypeOfferings, "
               "ec2:DescribeImages, ec2:DescribeInstances, ec2:RunInstances, ec2:TerminateInstances, ec2:CreateTags, "
               "ec2:ImportKeyPair, ec2:DescribeKeyPairs, ec2:DeleteKeyPair, ec2:CreateSecurityGroup, "
               "ec2:AuthorizeSecurityGroupIngress, ec2:DescribeSecurityGroups, ec2:DeleteSecurityGroup and "
               "ssm:GetParameter (pricing:GetProducts only to refresh prices)")
HOW_TO_CONFIGURE = ("configure AWS credentials with `aws configure` (or `aws sso login`), choose a profile with "
                    "AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
NO_CREDENTIALS_MESSAGE = f"no AWS credentials found: {HOW_TO_CONFIGURE}"
CREDENTIALS_REFUSED_MESSAGE = "AWS refused the credentials ({code}): {how}; the identity needs {permissions}"
NOT_PERMITTED_MESSAGE = ("AWS accepted the credentials but they may not {what} ({code}): give the identity "
                         "{permissions}")
QUOTA_MESSAGE = ("AWS refused to start {plan} in {region}: the account's vCPU quota for this instance family is too "
                 "low ({reason}). New AWS accounts have 0 vCPUs for G and P instances: in the Service Quotas console "
                 "(https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas, region {region}) request "
                 "an increase of \"Running On-Demand G and VT instances\" (or \"Running On-Demand P instances\") to at "
                 "least the instance's vCPU count; AWS reviews it, often within a day")


class VcpuQuotaExceeded(InvalidRequest):
    """The account's vCPU quota for the family is too low (0 on new accounts): only a quota increase helps."""


class AlreadyExists(InvalidRequest):
    """EC2 already has the thing (``*.Duplicate``): an earlier attempt whose answer was lost made it."""


def translate(exc: Exception, what: str, *, region: str | None = None, plan: str | None = None,
              thing: str = "object") -> ProviderError:
    """The typed error for one failed SDK call; anything unexpected is raised as it is (a bug, not a cloud answer)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        return _from_client_error(exc, what, region=region, plan=plan, thing=thing)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AuthError(NO_CREDENTIALS_MESSAGE)
    if isinstance(exc, ProfileNotFound):
        return AuthError(f"the AWS profile named in AWS_PROFILE does not exist ({exc}): {HOW_TO_CONFIGURE}")
    if isinstance(exc, NoRegionError):
        return InvalidRequest("no AWS region: set REGION in the project's .env (e.g. us-east-1)", field="region")
    if isinstance(exc, ParamValidationError):
        return InvalidRequest(f"maider built an invalid AWS request for {what}: {exc}")
    if isinstance(exc, BotoConnectionError):  # endpoint unreachable, connect/read timeouts, connection reset
        return TransientError(f"could not reach AWS for {what} ({type(exc).__name__})")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"unexpected answer from AWS to {what} ({type(exc).__name__})")
    raise exc


def _from_client_error(exc: ClientError, what: str, *, region: str | None, plan: str | None,
                       thing: str) -> ProviderError:
    error = exc.response.get("Error") or {}
    code = str(error.get("Code") or "")
    reason = " ".join(str(error.get("Message") or code or "no reason given").split())[:300]  # an HTML page, too
    status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    where = f"{plan or 'this instance type'} in {region or 'this region'}"
    if code == "UnauthorizedOperation" or (code in ("AccessDenied", "AccessDeniedException") and status == 403):
        return AuthError(NOT_PERMITTED_MESSAGE.format(what=what, code=code, permissions=PERMISSIONS))
    if code in _AUTH_CODES:
        return AuthError(CREDENTIALS_REFUSED_MESSAGE.format(code=code, how=HOW_TO_CONFIGURE, permissions=PERMISSIONS))
    if code == "VcpuLimitExceeded":
        return VcpuQuotaExceeded(QUOTA_MESSAGE.format(plan=plan or "this instance type", region=region or "this region",
                                                      reason=reason), field="plan")
    if code in _CAPACITY_CODES:
        return CapacityError(f"AWS has no capacity for {where} right now ({code}: {reason}); try another region or "
                             "instance type", region=region, plan=plan)
    if code in _THROTTLE_CODES:
        return RateLimited(f"AWS rate-limited {what} ({code})")
    if code.startswith("InvalidAMIID."):
        return InvalidRequest(f"AWS rejected the machine image for {what} ({code}: {reason})", field="image")
    if code.endswith(".Duplicate"):
        return AlreadyExists(f"AWS already has this {thing} ({what}: {code})")
    if code.endswith(".NotFound") or code in ("ParameterNotFound", "InvalidInstanceID.NotFound"):
        return NotFound(f"AWS has no such {thing} ({what}: {code})")
    if code in _TRANSIENT_CODES or status >= 500 or status == 408:
        return TransientError(f"AWS error {status or ''} on {what}: {code}: {reason}".replace("  ", " "))
    return InvalidRequest(f"AWS rejected {what} ({code}: {reason})")
