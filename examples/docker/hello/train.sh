#!/bin/sh
# A stand-in training script: prints its run id and config, "trains", exits 0.
echo "training run $WANDB_RUN_ID of $WANDB_PROJECT in a container"
echo "config: $WANDB_CONFIG"
for epoch in 1 2 3; do echo "epoch $epoch loss 0.$((4 - epoch))"; done
