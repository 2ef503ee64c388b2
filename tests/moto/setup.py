"""Sets up the moto stand-in for the tests (run by scripts/services-moto.sh
while authentication is still off): an IAM user `launch` allowed everything,
its access key (printed as `ACCESS_KEY_ID SECRET_ACCESS_KEY`), and the ECR
repository `launch`. Then turns SigV4 checking on: from here every request
must be signed with a key moto knows (a wrong secret gets 403
SignatureDoesNotMatch, an unknown key 403 InvalidClientTokenId).

Run: python setup.py http://127.0.0.1:PORT
"""

import json
import sys
import urllib.request

import boto3

endpoint = sys.argv[1]
session = boto3.session.Session(
    aws_access_key_id="AKIASETUPSETUPSETUP0", aws_secret_access_key="setup", region_name="us-east-1"
)
iam = session.client("iam", endpoint_url=endpoint)
iam.create_user(UserName="launch")
iam.put_user_policy(
    UserName="launch",
    PolicyName="everything",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ),
)
key = iam.create_access_key(UserName="launch")["AccessKey"]
session.client("ecr", endpoint_url=endpoint).create_repository(repositoryName="launch")
request = urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
)
urllib.request.urlopen(request).read()
print(key["AccessKeyId"], key["SecretAccessKey"])
