"""`python -m cnnlab`, which is what `torchrun ... -m cnnlab train ...` starts in each of its processes."""

from cnnlab.cli import main

if __name__ == "__main__":
    main()
