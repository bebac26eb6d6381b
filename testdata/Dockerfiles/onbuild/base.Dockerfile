# Built first as corpus-onbuild-base: its triggers run in the build that uses it.
FROM busybox
ONBUILD COPY trigger.txt /trigger.txt
ONBUILD RUN cat /trigger.txt > /triggered.txt
