#!/bin/sh
echo "hello from pybuild ($(cat /app/built.txt))"
