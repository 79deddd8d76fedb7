#!/usr/bin/python3
"""botocore as an independent AWS client for npyfs's unit tests.

    awshelper.py put ENDPOINT BUCKET KEY FILE [KEY FILE ...]
        create BUCKET if needed and upload each FILE as KEY (path-style,
        credentials S3RVER/S3RVER: the s3rver test server's)
    awshelper.py config
        print, as JSON, what botocore resolves from the environment and the
        AWS files: access_key, secret_key, token, region
"""
import json
import os
import sys

import botocore.session
from botocore.config import Config


def put(endpoint, bucket, pairs):
    for k in list(os.environ):
        if k.startswith("AWS_"):
            del os.environ[k]
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    s = botocore.session.get_session()
    c = s.create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="S3RVER", aws_secret_access_key="S3RVER",
                        config=Config(s3={"addressing_style": "path"}))
    try:
        c.create_bucket(Bucket=bucket)
    except c.exceptions.BucketAlreadyOwnedByYou:
        pass
    except c.exceptions.BucketAlreadyExists:
        pass
    for key, path in zip(pairs[0::2], pairs[1::2]):
        with open(path, "rb") as f:
            c.put_object(Bucket=bucket, Key=key, Body=f.read())


def config():
    s = botocore.session.get_session()
    cr = s.get_credentials()
    fr = cr.get_frozen_credentials() if cr else None
    print(json.dumps({
        "access_key": fr.access_key if fr else None,
        "secret_key": fr.secret_key if fr else None,
        "token": fr.token if fr else None,
        "region": s.get_config_variable("region"),
    }))


if __name__ == "__main__":
    if sys.argv[1] == "put":
        put(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif sys.argv[1] == "config":
        config()
    else:
        sys.exit("usage: awshelper.py put|config ...")
