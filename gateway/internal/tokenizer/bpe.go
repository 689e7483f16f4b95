package tokenizer

import (
	"container/heap"
	"unicode/utf8"
)

// bpe appends the ids of one pre-tokenised word.
func (t *Tokenizer) bpe(dst []int, word string) []int {
	if word == "" {
		return dst
	}
	if t.ignoreMerges {
		if id, ok := t.vocab[word]; ok {
			return append(dst, id)
		}
	}
	// Initial symbols: one per character; characters outside the vocabulary
	// become their bytes (byte fallback) or unk.
	syms := make([]int, 0, len(word))
	prevUnk := false
	for _, r := range word {
		var buf [utf8.UTFMax]byte
		n := utf8.EncodeRune(buf[:], r)
		if id, ok := t.vocab[string(buf[:n])]; ok {
			syms = append(syms, id)
			prevUnk = false
			continue
		}
		if t.byteFallback {
			all := true
			for _, b := range buf[:n] {
				if t.byteIDs[b] < 0 {
					all = false
				}
			}
			if all {
				for _, b := range buf[:n] {
					syms = append(syms, t.byteIDs[b])
				}
				prevUnk = false
				continue
			}
		}
		if t.unkID >= 0 {
			if !(t.fuseUnk && prevUnk) {
				syms = append(syms, t.unkID)
			}
			prevUnk = true
		}
	}
	return append(dst, t.mergeSymbols(syms)...)
}

type pairItem struct {
	rank, pos   int
	left, right int // ids when queued, to detect stale entries
}

type pairHeap []pairItem

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairItem)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mergeSymbols applies merges lowest rank first, leftmost among equals, as
// Hugging Face's BPE does.
func (t *Tokenizer) mergeSymbols(ids []int) []int {
	n := len(ids)
	if n < 2 {
		return ids
	}
	next := make([]int, n)
	prev := make([]int, n)
	alive := make([]bool, n)
	for i := range ids {
		next[i], prev[i], alive[i] = i+1, i-1, true
	}
	next[n-1] = -1
	h := &pairHeap{}
	push := func(l int) {
		if l < 0 || next[l] < 0 {
			return
		}
		r := next[l]
		if m, ok := t.merges[[2]int{ids[l], ids[r]}]; ok {
			heap.Push(h, pairItem{rank: m.rank, pos: l, left: ids[l], right: ids[r]})
		}
	}
	for i := 0; i < n-1; i++ {
		push(i)
	}
	for h.Len() > 0 {
		it := heap.Pop(h).(pairItem)
		l := it.pos
		if !alive[l] || ids[l] != it.left {
			continue
		}
		r := next[l]
		if r < 0 || ids[r] != it.right {
			continue
		}
		ids[l] = t.merges[[2]int{it.left, it.right}].id
		alive[r] = false
		next[l] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = l
		}
		push(prev[l])
		push(l)
	}
	out := ids[:0]
	for i := 0; i >= 0; i = next[i] {
		out = append(out, ids[i])
	}
	return out
}
