# The Ray head (and any Ray worker node) of deploy/compose.yaml, with mmsearch installed: Ray runs
# mmsearch's decoding and encoding actors in these processes, so every node needs the package, at
# the same Python and Ray versions as the machine that runs `mmsearch index --ray` (check with
# `python --version` and `pip show ray` there; RAY_IMAGE picks the matching base image).
#
#   docker build -f deploy/ray.Dockerfile -t mmsearch-ray .      # from the repository root
#
# UNTESTED: written without Docker, like compose.yaml.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311
FROM ${RAY_IMAGE}
COPY --chown=ray:users pyproject.toml constraints.txt README.md /opt/mmsearch/
COPY --chown=ray:users mmsearch /opt/mmsearch/mmsearch
COPY --chown=ray:users indexer /opt/mmsearch/indexer
RUN pip install --no-cache-dir -c /opt/mmsearch/constraints.txt "/opt/mmsearch[ray]"
