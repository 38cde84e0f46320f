// Audio worklets of the /ui page (no build step, no CDN).
// "rvc-capture": posts each 128-frame render quantum of the microphone (channel 0) to the page.
// "rvc-player": plays Float32 blocks the page posts to it, in order; reports underruns.

class CaptureProcessor extends AudioWorkletProcessor {
  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      this.port.postMessage(input[0].slice(0));
    }
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.underruns = 0;
    this.port.onmessage = (event) => {
      if (event.data === "clear") {
        this.queue = [];
        this.offset = 0;
      } else {
        this.queue.push(event.data);
      }
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    while (written < out.length && this.queue.length > 0) {
      const block = this.queue[0];
      const n = Math.min(out.length - written, block.length - this.offset);
      out.set(block.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      if (this.offset >= block.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    if (written < out.length) {
      out.fill(0, written);
      if (this.queue.length === 0 && written > 0) {
        this.underruns += 1;
        this.port.postMessage({ underruns: this.underruns });
      }
    }
    return true;
  }
}

registerProcessor("rvc-capture", CaptureProcessor);
registerProcessor("rvc-player", PlayerProcessor);
