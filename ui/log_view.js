// The console of a build: numbered lines appended as they come, a bounded number held in the
// page, auto-scroll that pauses while the reader looks further up, search and jumps to a line.
// Line markup (`h`) is made by the server from escaped text (gobuild.ui.console_lines); line
// numbers and everything else are set as text.
export default {
  template: `
    <div class="gb-log">
      <div class="gb-log-scroll" ref="scroll" @scroll="onScroll">
        <div class="gb-log-lines" ref="lines"></div>
      </div>
      <button v-show="!following" type="button" class="gb-log-follow" @click="resume">
        Follow the log &#8595;
      </button>
    </div>`,
  props: {
    maxLines: { type: Number, default: 5000 },
  },
  data() {
    return { following: true, matches: [], current: -1, reportedFirst: -1 };
  },
  methods: {
    makeLine(line) {
      const row = document.createElement("div");
      row.className = "gb-line" + (line.l ? " gb-" + line.l : "");
      row.dataset.n = String(line.n);
      const number = document.createElement("span");
      number.className = "gb-ln";
      number.textContent = String(line.n);
      const text = document.createElement("span");
      text.className = "gb-text";
      text.innerHTML = line.h;
      row.append(number, text);
      return row;
    },
    fragment(lines) {
      const fragment = document.createDocumentFragment();
      for (const line of lines) fragment.append(this.makeLine(line));
      return fragment;
    },
    replace(lines) {
      this.$refs.lines.replaceChildren(this.fragment(lines));
      this.clearSearch();
      this.following = true;
      this.toBottom();
      this.reportFirst();
    },
    append(lines) {
      if (!lines.length) return;
      this.$refs.lines.append(this.fragment(lines));
      // Held lines are capped: while following at the cap, in any case at three times it.
      const limit = this.following ? this.maxLines : this.maxLines * 3;
      this.trimTop(limit);
      if (this.following) this.toBottom();
    },
    prepend(lines) {
      if (!lines.length) return;
      const scroll = this.$refs.scroll;
      const before = scroll.scrollHeight;
      this.$refs.lines.prepend(this.fragment(lines));
      scroll.scrollTop += scroll.scrollHeight - before;
      this.reportFirst();
    },
    trimTop(limit) {
      const box = this.$refs.lines;
      let excess = box.childElementCount - limit;
      if (excess <= 0) return;
      while (excess-- > 0) box.firstElementChild.remove();
      this.matches = this.matches.filter((row) => row.isConnected);
      this.reportFirst();
    },
    reportFirst() {
      const row = this.$refs.lines.firstElementChild;
      const first = row ? Number(row.dataset.n) : 0;
      if (first === this.reportedFirst) return;
      this.reportedFirst = first;
      this.$emit("first", { first });
    },
    toBottom() {
      this.$nextTick(() => {
        if (!this.following) return; // the reader jumped somewhere meanwhile
        const scroll = this.$refs.scroll;
        scroll.scrollTop = scroll.scrollHeight;
      });
    },
    onScroll() {
      const scroll = this.$refs.scroll;
      this.following = scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 8;
    },
    resume() {
      this.following = true;
      this.trimTop(this.maxLines);
      this.toBottom();
    },
    jump(number) {
      const row = this.$refs.lines.querySelector(`[data-n="${Number(number)}"]`);
      if (!row) return false;
      this.following = false;
      row.scrollIntoView({ block: "center" });
      row.classList.remove("gb-flash");
      void row.offsetWidth;
      row.classList.add("gb-flash");
      return true;
    },
    clearSearch() {
      for (const row of this.matches) row.classList.remove("gb-match", "gb-match-current");
      this.matches = [];
      this.current = -1;
    },
    search(term) {
      this.clearSearch();
      const wanted = String(term || "").toLowerCase();
      if (!wanted) return 0;
      for (const row of this.$refs.lines.children) {
        if (row.lastElementChild.textContent.toLowerCase().includes(wanted)) {
          row.classList.add("gb-match");
          this.matches.push(row);
        }
      }
      if (this.matches.length) this.step(1);
      return this.matches.length;
    },
    step(direction) {
      if (!this.matches.length) return 0;
      if (this.current >= 0) this.matches[this.current].classList.remove("gb-match-current");
      const count = this.matches.length;
      this.current = (this.current + direction + count) % count;
      const row = this.matches[this.current];
      row.classList.add("gb-match-current");
      this.following = false;
      row.scrollIntoView({ block: "center" });
      return this.current + 1;
    },
  },
};
