# Built with -f dockerfiles/app.Dockerfile context: the context has no Dockerfile, and the
# ignore file beside this one (app.Dockerfile.dockerignore) is used, not context/.dockerignore.
FROM busybox
COPY . /ctx/
COPY kept.txt /kept.txt
