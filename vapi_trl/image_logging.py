"""Sample grids for the training logs: rows `ground truth | VQ reconstruction | teacher-forced samples`, written to
TensorBoard, Weights & Biases or Trackio, whichever `args.report_to` names."""

from collections.abc import Callable

import torch


IMAGE_BACKENDS = ("tensorboard", "wandb", "trackio")
CAPTION = "ground truth | VQ reconstruction | teacher-forced samples"
# Samples shown per image (columns after the ground truth and its reconstruction).
_MAX_SAMPLES_PER_ROW = 6


class SampleGridLogger:
    """
    Buffers one grid of sample images per logging step and writes it when the trainer logs.

    Args:
        args ([`~transformers.TrainingArguments`]): read at each call for `num_images_to_log` (images per grid; 0
            disables), `logging_steps` and `report_to`.
    """

    def __init__(self, args):
        self.args = args
        self._grid: torch.Tensor | None = None

    def backends(self) -> list[str]:
        """The image-capable trackers among `args.report_to`."""
        report_to = self.args.report_to or []
        return [name for name in IMAGE_BACKENDS if name in report_to]

    def is_due(self, global_step: int, is_main_process: bool) -> bool:
        """Whether the step after `global_step` is logged with a grid (main process only; step 0 always)."""
        if self.args.num_images_to_log <= 0 or not is_main_process or not self.backends():
            return False
        logging_steps = max(int(self.args.logging_steps), 1) if self.args.logging_steps >= 1 else 1
        return (global_step + 1) % logging_steps == 0 or global_step == 0

    @torch.no_grad()
    def buffer(
        self,
        target_pixels: torch.Tensor,
        target_ids: torch.Tensor,
        decoded: torch.Tensor,
        decode: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        """
        Keep the grid of the first `num_images_to_log` images for the next `write`.

        Args:
            target_pixels (`torch.Tensor` of shape `(U, 3, H, W)`): original images in [-1, 1].
            target_ids (`torch.LongTensor` of shape `(U, N)`): their clean tokens, decoded for the reconstruction.
            decoded (`torch.Tensor` of shape `(U, G, 3, H, W)`): the decoded samples in [-1, 1].
            decode (callable): the image tokenizer's `decode`, `(B, N)` ids to `(B, 3, H, W)` pixels.
        """
        from torchvision.utils import make_grid

        count = min(self.args.num_images_to_log, target_pixels.shape[0])
        reconstruction = decode(target_ids[:count])
        samples = decoded[:count, : min(decoded.shape[1], _MAX_SAMPLES_PER_ROW)]
        rows = torch.cat([target_pixels[:count, None], reconstruction[:, None], samples], dim=1)
        grid = make_grid(
            rows.flatten(0, 1).float().clamp(-1, 1), nrow=rows.shape[1], normalize=True, value_range=(-1, 1)
        )
        self._grid = grid.cpu()

    def write(self, global_step: int, callbacks: list) -> None:
        """Write the buffered grid, if any, to every backend as `train/samples`, and clear it.

        TensorBoard has no module-level run: the grid goes to the writer of transformers' `TensorBoardCallback`
        among `callbacks`, so that it lands in the same event file as the scalars.
        """
        if self._grid is None:
            return
        grid, self._grid = self._grid, None
        for backend in self.backends():
            if backend == "tensorboard":
                from transformers.integrations import TensorBoardCallback

                for callback in callbacks:
                    if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                        callback.tb_writer.add_image("train/samples", grid, global_step)
                        callback.tb_writer.flush()
            elif backend == "wandb":
                import wandb

                if wandb.run is not None:
                    wandb.log({"train/samples": wandb.Image(grid, caption=CAPTION)}, step=global_step)
            elif backend == "trackio":
                import trackio

                trackio.log({"train/samples": trackio.Image(grid.permute(1, 2, 0).numpy(), caption=CAPTION)})


__all__ = ["SampleGridLogger"]
