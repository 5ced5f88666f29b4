"""The one training loop, for Simple Pose and BodyPoseNet.

A network's train action (simple_pose/train.py, bpnet/train.py) fills in a `job.TrainJob` (its
model, data, loss and hyper-parameters) and calls `loop.run_training`, which reads in run order
like torchvision's references/classification/train.py.

    job.py          TrainJob, Schedule: what a network hands to the loop
    loop.py         run_training, train_one_epoch, evaluate_model
    data.py         seeds, the epoch's loader, steps per epoch, batches to the device
    optim.py        optimizer, learning-rate schedules, kernel regularization
    checkpoint.py   the files written after each epoch, and resume
    preemption.py   SIGTERM/SIGUSR1: stop at the next step boundary, step checkpoint, exit 75
    metrics.py      metrics.jsonl, TensorBoard, curves.png, the epoch line

Reproducibility, so that a run killed with `kill -9` and restarted ends with the same weights as
an uninterrupted one: every epoch starts by seeding all RNGs from (seed, epoch, rank), the
sampler's order is a function of (seed, epoch) (DistributedSampler, also with one process, or
data.ImageGroupedSampler), data workers are seeded from the loader's generator, and training
resumes at epoch boundaries (from `checkpoint_last.pth`, the last complete epoch), or mid-epoch
after a stop request (preemption.py: the step, the epoch's sums and every rank's RNG states are
in the checkpoint).
Nothing a previous epoch drew leaks into the next.

Batches are dicts (the datasets' own collate or torch's default): the model is called on
`batch[job.inputs_key]` ("image"), `job.loss_fn(outputs, batch)` gives the loss and its parts.

Results directory (written by rank 0 only, every file atomically: temp file + os.replace):
    checkpoint_last.pth        every epoch, full training state (resume reads it)
    checkpoint_epoch_NNN.pth   every `checkpoint_every` epochs
    model_best.pth             when validation AP improves
    model_final.pth            at the end
    metrics.jsonl              one JSON object per epoch
    curves.png                 loss, LR and AP against epoch (render.plot_curves), redrawn
                               after an epoch at most every CURVES_EVERY_S seconds (and
                               after each validation), and at the end
    spec.yaml                  the resolved spec
    tensorboard/               TensorBoard scalars
"""
