"""moto_server (PyPI `moto[server]`), the stand-in for AWS STS, IAM and ECR's
API in the tests, with two changes to ECR's GetAuthorizationToken:

* its `expiresAt` is what the real ECR answers, now + 12 hours (moto answers
  a fixed 2015-01-01, already past, which no client would cache);
* each call is counted in the file named by LAUNCH_AGENT_MOTO_ECR_TOKEN_COUNT
  (one line per call), so a test can show the token is fetched once for
  many jobs.

Everything else is moto as released: STS GetCallerIdentity, IAM, ECR
DescribeRepositories, with SigV4 checked once `scripts/services-moto.sh`
has turned authentication on. The password of the token is moto's,
`ACCOUNT-auth-token`; the registry the script starts beside it accepts
user `AWS` with that password (moto serves no `/v2/`).

Run: python server.py -H 127.0.0.1 -p PORT
"""

import os
import sys
from base64 import b64encode
from datetime import datetime, timedelta, timezone

from moto.core.common_types import TYPE_RESPONSE  # noqa: F401  (moto imported first)
from moto.ecr import responses as ecr_responses
from moto.ecr.responses import ECRResponse

COUNT_FILE = os.environ.get("LAUNCH_AGENT_MOTO_ECR_TOKEN_COUNT")


def get_authorization_token(self):  # type: ignore[no-untyped-def]
    """ECR GetAuthorizationToken as the real service answers it."""
    if COUNT_FILE:
        with open(COUNT_FILE, "a") as count:
            count.write("GetAuthorizationToken\n")
    registry_ids = self._get_param("registryIds") or [self.current_account]
    data = []
    for registry_id in registry_ids:
        password = f"{registry_id}-auth-token"
        data.append(
            {
                "authorizationToken": b64encode(f"AWS:{password}".encode()).decode(),
                "expiresAt": datetime.now(timezone.utc) + timedelta(hours=12),
                "proxyEndpoint": f"https://{registry_id}.dkr.ecr.{self.region}.amazonaws.com",
            }
        )
    return ecr_responses.ActionResult({"authorizationData": data})


ECRResponse.get_authorization_token = get_authorization_token

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main())
