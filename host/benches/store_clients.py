"""The stores' own Python clients, as the build-context benchmark
(host/benches/blob_contexts.rs) runs them against the same stand-ins as
the agent: uploads FILE and prints the seconds the upload itself took
(after the imports and the client's set-up).

    store_clients.py gcs BASE_URL TOKEN BUCKET NAME FILE
        google-cloud-storage (`Blob.upload_from_filename`, its defaults: a
        resumable upload for a file over 8 MiB, in one request up to 100
        MiB), BASE_URL standing for
        https://storage.googleapis.com, TOKEN the OAuth2 access token.
    store_clients.py azure ACCOUNT_URL TOKEN CA_FILE CONTAINER NAME FILE
        azure-storage-blob (`BlobClient.upload_blob`, its defaults: one Put
        Blob up to 64 MiB, else blocks of 4 MiB), ACCOUNT_URL standing for
        https://ACCOUNT.blob.core.windows.net, TOKEN an AAD token for Azure
        Storage, CA_FILE the certificate authority to trust.

The packages come from PyPI: scripts/services-gcs.sh installs
google-cloud-storage into the GCS stand-in's venv, and
scripts/services-azure.sh azure-storage-blob into a venv of its own.
"""

import sys
import time


def gcs(base_url, token, bucket, name, path):
    from google.cloud import storage
    from google.oauth2.credentials import Credentials

    client = storage.Client(
        project="bench",
        credentials=Credentials(token=token),
        client_options={"api_endpoint": base_url},
    )
    blob = client.bucket(bucket).blob(name)
    start = time.monotonic()
    blob.upload_from_filename(path)
    return time.monotonic() - start


def azure(account_url, token, ca_file, container, name, path):
    from azure.core.credentials import AccessToken
    from azure.storage.blob import BlobServiceClient

    class Token:
        """A token credential that lends one AAD token."""

        def get_token(self, *scopes, **kwargs):
            return AccessToken(token, int(time.time()) + 600)

    service = BlobServiceClient(account_url, credential=Token(), connection_verify=ca_file)
    blob = service.get_blob_client(container, name)
    start = time.monotonic()
    with open(path, "rb") as data:
        blob.upload_blob(data, overwrite=True)
    return time.monotonic() - start


def main():
    store, args = sys.argv[1], sys.argv[2:]
    seconds = {"gcs": gcs, "azure": azure}[store](*args)
    print(f"{seconds:.3f}")


if __name__ == "__main__":
    main()
