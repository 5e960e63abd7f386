# The notebook server's image: one image for Daphne, the kernel worker and `migrate`
# (compose.yaml), made the way the README's production block makes a host.
# Debian bookworm, as the project's own machines: bubblewrap 0.8 (tmpfs --size) and setpriv.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# bubblewrap: every notebook's sandbox (docs/security.md); setpriv comes with util-linux, which
# every Debian image has. slirp4netns only serves KERNEL_NETWORK=outbound (it then also needs
# /dev/net/tun in the worker's container: docs/operations.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap slirp4netns \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# The virtualenv as the README makes it without scripts/run, so the README's commands
# (.venv/bin/daphne, .venv/bin/python manage.py ...) run unchanged in /app.
COPY requirements.txt ./
RUN python3 -m venv .venv && .venv/bin/pip install -r requirements.txt

COPY . .

# Hashed, compressed static files that Daphne serves (WhiteNoise), made once per image. The key is
# a throwaway so that settings never write var/secrets.key into the image: the containers get
# the real SECRETS_KEY from the environment.
RUN SECRETS_KEY="$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')" \
    .venv/bin/python manage.py collectstatic --noinput

EXPOSE 8000
CMD [".venv/bin/daphne", "-b", "0.0.0.0", "-p", "8000", "notebookproject.asgi:application"]
