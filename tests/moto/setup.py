"""Sets up the moto stand-in for the tests (run by scripts/services-moto.sh
while authentication is still off): an IAM user `launch` allowed everything,
its access key, a role `launch-role` allowed everything and temporary
credentials for it (STS AssumeRole: what an instance role or web identity
hands out), and the ECR repository
`launch`; prints `ACCESS_KEY_ID SECRET_ACCESS_KEY SESSION_KEY_ID
SESSION_SECRET SESSION_TOKEN`. Then turns SigV4 checking on: from here every request
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
user = boto3.session.Session(
    aws_access_key_id=key["AccessKeyId"],
    aws_secret_access_key=key["SecretAccessKey"],
    region_name="us-east-1",
)
role = iam.create_role(
    RoleName="launch-role",
    AssumeRolePolicyDocument=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
        }
    ),
)["Role"]
iam.put_role_policy(
    RoleName="launch-role",
    PolicyName="everything",
    PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ),
)
temporary = user.client("sts", endpoint_url=endpoint).assume_role(
    RoleArn=role["Arn"], RoleSessionName="launch-agent-test"
)["Credentials"]
request = urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
)
urllib.request.urlopen(request).read()
print(
    key["AccessKeyId"],
    key["SecretAccessKey"],
    temporary["AccessKeyId"],
    temporary["SecretAccessKey"],
    temporary["SessionToken"],
)
